// A function is a Web-standard handler: it gets a Request and returns a Response.
// Invoke it with `curl http://127.0.0.1:8080/fn/v1/hello?name=you -H "apikey: rk_pub_…"`.

export default async function handler(req: Request): Promise<Response> {
  const name = new URL(req.url).searchParams.get("name") ?? "world";
  const body = {
    message: `Hello, ${name}!`,
    // Reactor forwards the verified caller to every function.
    user: req.headers.get("x-reactor-user-id"),
  };
  return new Response(JSON.stringify(body), {
    headers: { "content-type": "application/json" },
  });
}
