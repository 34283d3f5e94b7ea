// The todo app: @reactor/client in the browser. Served by Reactor from sites/web, the API is
// this origin; elsewhere `?endpoint=…&key=…` names it.
import { createClient } from '@reactor/client'

const params = new URLSearchParams(location.search)
const endpoint = params.get('endpoint') ?? location.origin
const key = params.get('key') ?? document.querySelector('meta[name="reactor-key"]')?.content ?? ''
const reactor = createClient(endpoint, key)

const $ = (id) => document.getElementById(id)
const show = (message) => { $('error').textContent = message ?? '' }

/** The app's operations; the UI below and the self-test both use them. */
export const app = {
  async signUp(email, password) {
    const { data, error } = await reactor.auth.signUp({ email, password })
    if (error) throw error
    return data.user
  },
  async signIn(email, password) {
    const { data, error } = await reactor.auth.signInWithPassword({ email, password })
    if (error) throw error
    return data.user
  },
  async createOrg(name) {
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')
    const { data, error } = await reactor.auth.orgs.create({ name, slug })
    if (error) throw error
    const switched = await reactor.auth.orgs.switch(data.id)
    if (switched.error) throw switched.error
    return data
  },
  async add(title) {
    const { data, error } = await reactor.from('todos').insert({ title }).select('id, title, done').single()
    if (error) throw error
    return data
  },
  async toggle(todo) {
    const { error } = await reactor.from('todos').update({ done: !todo.done }).eq('id', todo.id)
    if (error) throw error
  },
  async list() {
    const { data, error } = await reactor.from('todos').select('id, title, done').order('created_at')
    if (error) throw error
    return data
  },
  async signOut() {
    await reactor.auth.signOut()
  },
}

async function render() {
  const { data } = await reactor.auth.getSession()
  const session = data.session
  $('signed-out').hidden = Boolean(session)
  $('signed-in').hidden = !session
  if (!session) return
  $('who').textContent = session.user.email
  const orgs = await reactor.auth.orgs.list()
  const active = JSON.parse(atob(session.access_token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')))
  const org = orgs.data?.find((o) => o.id === active.org_id)
  $('org').textContent = org ? org.name : 'no organization'
  const list = $('todos')
  list.replaceChildren()
  if (!org) return
  for (const todo of await app.list()) {
    const item = document.createElement('li')
    item.className = todo.done ? 'done' : ''
    const box = document.createElement('input')
    box.type = 'checkbox'
    box.checked = todo.done
    box.onchange = () => run(() => app.toggle(todo))
    const text = document.createElement('span')
    text.textContent = ` ${todo.title}`
    item.append(box, text)
    list.append(item)
  }
}

async function run(action) {
  show('')
  try {
    await action()
  } catch (e) {
    show(`${e.message}${e.hint ? ` — ${e.hint}` : ''}`)
  }
  await render()
}

$('auth-form').onsubmit = (event) => {
  event.preventDefault()
  const form = new FormData(event.target)
  const email = form.get('email')
  const password = form.get('password')
  run(() => (event.submitter?.value === 'up' ? app.signUp(email, password) : app.signIn(email, password)))
}
$('org-form').onsubmit = (event) => {
  event.preventDefault()
  run(() => app.createOrg(new FormData(event.target).get('name')))
  event.target.reset()
}
$('todo-form').onsubmit = (event) => {
  event.preventDefault()
  run(() => app.add(new FormData(event.target).get('title')))
  event.target.reset()
}
$('sign-out').onclick = () => run(() => app.signOut())

await render()
window.reactorApp = app
window.dispatchEvent(new Event('reactor-app-ready'))
