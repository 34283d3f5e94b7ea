//! OpenAI's chat completions to Anthropic's Messages API and back: messages and the system
//! prompt, images, tools and tool results, stop sequences, usage, finish reasons, and the
//! streamed events (Anthropic's `message_start` … `message_stop` become OpenAI's
//! `chat.completion.chunk`s and `[DONE]`, event by event).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value, json};

/// Anthropic requires `max_tokens`; OpenAI callers often leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;
pub const VERSION: &str = "2023-06-01";

/// The Messages API request for an OpenAI chat request; `Err` is the caller's mistake.
pub fn request(openai: &Map<String, Value>, model: &str) -> Result<Value, String> {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let list = openai
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;
    for message in list {
        let role = message["role"].as_str().unwrap_or("");
        match role {
            "system" | "developer" => system.push(text_of(&message["content"])),
            "user" => push(&mut messages, "user", user_blocks(&message["content"])?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(&message["content"]);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(arguments)
                        .map_err(|_| "a tool call's `arguments` is not JSON".to_string())?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": input,
                    }));
                }
                push(&mut messages, "assistant", blocks);
            }
            "tool" => push(
                &mut messages,
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message["tool_call_id"],
                    "content": text_of(&message["content"]),
                })],
            ),
            other => return Err(format!("unknown message role `{other}`")),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let max_tokens = openai
        .get("max_completion_tokens")
        .or_else(|| openai.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = openai.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    match openai.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            out.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if let Some(tools) = openai.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({
                    "name": t["function"]["name"],
                    "description": t["function"]["description"],
                    "input_schema": if t["function"]["parameters"].is_object() {
                        t["function"]["parameters"].clone()
                    } else {
                        json!({"type": "object", "properties": {}})
                    },
                })
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = openai.get("tool_choice") {
        let mapped = match choice {
            Value::String(s) if s == "required" => Some(json!({"type": "any"})),
            Value::String(s) if s == "none" => Some(json!({"type": "none"})),
            Value::String(_) => Some(json!({"type": "auto"})),
            Value::Object(o) => {
                Some(json!({"type": "tool", "name": o.get("function").map(|f| f["name"].clone())}))
            }
            _ => None,
        };
        if let Some(mapped) = mapped {
            out.insert("tool_choice".into(), mapped);
        }
    }
    Ok(Value::Object(out))
}

/// Anthropic wants user and assistant turns to alternate: consecutive blocks of one role
/// join one message.
fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// A message's text: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, String> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => Ok(json!({"type": "text", "text": p["text"]})),
                Some("image_url") => {
                    let url = p["image_url"]["url"].as_str().unwrap_or("");
                    match url
                        .strip_prefix("data:")
                        .and_then(|rest| rest.split_once(";base64,"))
                    {
                        Some((media_type, data)) => Ok(json!({
                            "type": "image",
                            "source": {"type": "base64", "media_type": media_type, "data": data},
                        })),
                        None => Ok(json!({"type": "image", "source": {"type": "url", "url": url}})),
                    }
                }
                other => Err(format!(
                    "content part type {other:?} is not supported for this model"
                )),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err("a message's `content` must be a string or an array".into()),
    }
}

fn finish_reason(stop: &Value) -> Value {
    match stop.as_str() {
        Some("end_turn" | "stop_sequence") => json!("stop"),
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some(_) => json!("stop"),
        None => Value::Null,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage(u: &Value) -> Value {
    let input = u["input_tokens"].as_u64().unwrap_or(0);
    let output = u["output_tokens"].as_u64().unwrap_or(0);
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// The chat completion for a Messages API answer.
pub fn response(message: &Value) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            _ => {}
        }
    }
    let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": message["id"],
        "object": "chat.completion",
        "created": now(),
        "model": message["model"],
        "choices": [{"index": 0, "message": msg, "finish_reason": finish_reason(&message["stop_reason"])}],
        "usage": usage(&message["usage"]),
    })
}

/// OpenAI's error body for an Anthropic one.
pub fn error(body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = parsed["error"]["type"].as_str().unwrap_or("api_error");
    let message = parsed["error"]["message"]
        .as_str()
        .unwrap_or("the provider refused the request");
    json!({"error": {"message": message, "type": if kind == "invalid_request_error" { kind } else { "invalid_request_error" }, "param": null, "code": kind}})
}

/// Anthropic's event stream as OpenAI's chunk stream, one event in, zero or more chunks out.
pub fn stream<S, E>(
    upstream: S,
    include_usage: bool,
) -> impl Stream<Item = Result<Bytes, std::io::Error>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let mut state = Translator {
        include_usage,
        ..Translator::default()
    };
    let mut buffer = Vec::<u8>::new();
    upstream.map(move |chunk| {
        let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
        buffer.extend_from_slice(&chunk);
        let mut out = String::new();
        // Events end with a blank line.
        while let Some(end) = find(&buffer, b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let data: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if let Ok(value) = serde_json::from_str::<Value>(&data) {
                for chunk in state.translate(&value) {
                    out.push_str(&chunk);
                }
            }
        }
        Ok(Bytes::from(out))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Default)]
struct Translator {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    input_tokens: u64,
    /// Anthropic's content block index → OpenAI's tool call index.
    tools: HashMap<u64, usize>,
}

impl Translator {
    fn chunk(&self, delta: Value, finish: Value) -> String {
        let c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {c}\n\n")
    }

    fn translate(&mut self, event: &Value) -> Vec<String> {
        match event["type"].as_str() {
            Some("message_start") => {
                let m = &event["message"];
                self.id = m["id"].as_str().unwrap_or("msg").to_string();
                self.model = m["model"].as_str().unwrap_or("").to_string();
                self.created = now();
                self.input_tokens = m["usage"]["input_tokens"].as_u64().unwrap_or(0);
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            Some("content_block_start") if event["content_block"]["type"] == "tool_use" => {
                let index = self.tools.len();
                self.tools
                    .insert(event["index"].as_u64().unwrap_or(0), index);
                let b = &event["content_block"];
                vec![self.chunk(
                    json!({"tool_calls": [{"index": index, "id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": ""}}]}),
                    Value::Null,
                )]
            }
            Some("content_block_delta") => {
                let d = &event["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        vec![self.chunk(json!({"content": d["text"]}), Value::Null)]
                    }
                    Some("input_json_delta") => {
                        let index = self
                            .tools
                            .get(&event["index"].as_u64().unwrap_or(0))
                            .copied()
                            .unwrap_or(0);
                        vec![self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": d["partial_json"]}}]}),
                            Value::Null,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            Some("message_delta") => {
                let mut out =
                    vec![self.chunk(json!({}), finish_reason(&event["delta"]["stop_reason"]))];
                if self.include_usage {
                    let u = usage(&json!({
                        "input_tokens": self.input_tokens,
                        "output_tokens": event["usage"]["output_tokens"],
                    }));
                    let c = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": u,
                    });
                    out.push(format!("data: {c}\n\n"));
                }
                out
            }
            Some("message_stop") => vec!["data: [DONE]\n\n".to_string()],
            Some("error") => {
                let e = error(event.to_string().as_bytes());
                vec![format!("data: {e}\n\n")]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tools_translates_both_ways() {
        let openai = json!({
            "model": "x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "user", "content": [{"type": "text", "text": "And now?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": "END",
            "temperature": 0.2
        });
        let out = request(openai.as_object().expect("object"), "claude").expect("translates");
        assert_eq!(out["system"], "Be brief.");
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["tool_choice"], json!({"type": "any"}));
        assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
        let messages = out["messages"].as_array().expect("messages");
        assert_eq!(
            messages.len(),
            3,
            "the tool result and the next user turn join: {out}"
        );
        assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(
            messages[2]["content"][2]["source"]["media_type"],
            "image/png"
        );

        let back = response(&json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Lyon"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}
        }));
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(back["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            back["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Lyon\"}"
        );
        assert_eq!(back["usage"]["total_tokens"], 15);
    }

    #[test]
    fn a_bad_tool_call_is_the_callers_error() {
        let openai = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}]});
        assert!(request(openai.as_object().expect("object"), "m").is_err());
        let openai = json!({"messages": [{"role": "robot", "content": "x"}]});
        assert!(request(openai.as_object().expect("object"), "m").is_err());
    }
}
