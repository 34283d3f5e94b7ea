// Type-checked, never run (`npm run typecheck`): the SDK typed by the Database type
// `reactor data types` wrote for examples/todo.
import { createClient } from '@reactor/client'
import type { Database } from '../../examples/todo/database.types.js'

const reactor = createClient<Database>('http://127.0.0.1:8080', 'rk_pub_example')

export async function example(): Promise<void> {
  const { data, error } = await reactor.from('todos').select().eq('done', false).order('created_at')
  if (error) {
    const code: string = error.code
    const status: number = error.status
    void code
    void status
  }
  if (data) {
    const title: string = data[0]!.title
    const done: boolean = data[0]!.done
    const list: string | null = data[0]!.list_id
    void title
    void done
    void list
  }
  const one = await reactor.from('lists').select().eq('name', 'Launch').single()
  if (one.data) {
    const name: string = one.data.name
    void name
  }
  await reactor.from('todos').insert({ title: 'typed' })
  await reactor.from('todos').insert([{ title: 'a' }, { title: 'b', done: true }])
  await reactor.from('todos').update({ done: true }).eq('title', 'typed')
  // @ts-expect-error `title` is required on insert
  await reactor.from('todos').insert({ done: true })
  // @ts-expect-error `done` is a boolean
  await reactor.from('todos').update({ done: 'yes' })
  // @ts-expect-error no such table
  reactor.from('nope')
  await reactor.auth.signInWithPassword({ email: 'a@example.com', password: 'correct horse battery' })
  const hello = await reactor.functions.invoke<{ message: string }>('hello', { body: { name: 'Ada' } })
  const message: string | undefined = hello.data?.message
  void message
  // @ts-expect-error methods are HTTP methods
  await reactor.functions.invoke('hello', { method: 'FETCH' })
}
