// Starts a real `reactor dev` (the binary cargo built) on an ephemeral port for a project made
// of the given migrations; resolves to { endpoint, keys, stop }.
import { spawn } from 'node:child_process'
import { mkdtempSync, mkdirSync, copyFileSync, writeFileSync, readFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname, basename } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const binary = process.env.REACTOR_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug', 'reactor')

// `functions`: { name: { 'index.ts': source, … } }, declared in reactor.toml as they are.
// `manifest`: more reactor.toml text (jobs, …), appended as it is.
// `files`: { 'sites/web/index.html': text, … }, written into the project as they are.
export async function startDev(migrations, { functions = {}, manifest: extra = '', files = {} } = {}) {
  if (!existsSync(binary)) throw new Error(`build the CLI first (cargo build -p reactor-cli): ${binary}`)
  const dir = mkdtempSync(join(tmpdir(), 'reactor-sdk-'))
  const project = join(dir, 'project')
  const target = join(project, 'data', 'migrations')
  mkdirSync(target, { recursive: true })
  let manifest = 'project_id = "sdk-0a1b2c3d"\nname = "SDK"\n\n[data]\nmigrations_dir = "data/migrations"\n'
  for (const [name, files] of Object.entries(functions)) {
    for (const [file, text] of Object.entries(files)) {
      const path = join(project, 'functions', name, file)
      mkdirSync(dirname(path), { recursive: true })
      writeFileSync(path, text)
    }
    manifest += `\n[[functions]]\nname = "${name}"\nsource = "functions/${name}"\n`
  }
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(dirname(join(project, file)), { recursive: true })
    writeFileSync(join(project, file), text)
  }
  writeFileSync(join(project, 'reactor.toml'), manifest + extra)
  migrations.forEach((file, i) => copyFileSync(join(root, file), join(target, `${String(i + 1).padStart(4, '0')}_${basename(file)}`)))
  const dev = spawn(binary, ['dev', '--port', '0'], {
    cwd: project,
    env: { ...process.env, REACTOR_HOME: join(dir, 'home'), REACTOR_KEYCHAIN: 'off', REACTOR_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let said = ''
  const endpoint = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`reactor dev did not start:\n${said}`)), 60_000)
    const read = (chunk) => {
      said += chunk
      const m = said.match(/endpoint\s+(http:\/\/\S+)/)
      if (m && said.includes('Press Ctrl-C')) {
        clearTimeout(timer)
        resolve(m[1])
      }
    }
    dev.stdout.on('data', read)
    dev.stderr.on('data', read)
    dev.on('exit', (code) => reject(new Error(`reactor dev exited (${code}):\n${said}`)))
  })
  const keys = JSON.parse(readFileSync(join(project, '.reactor', 'keys.json'), 'utf8'))
  return { endpoint, keys, stop: () => dev.kill('SIGINT') }
}
