// The playground: a CodeMirror 6 editor, a Run button (and Ctrl/Cmd+Enter), live output when the
// stream endpoint exists, the run's status, exit code, duration and output hashes, and my recent runs.
import { Compartment, EditorState } from '@codemirror/state';
import { EditorView, drawSelection, highlightActiveLine, highlightActiveLineGutter, keymap, lineNumbers } from '@codemirror/view';
import { defaultKeymap, history, historyKeymap } from '@codemirror/commands';
import { StreamLanguage, bracketMatching, defaultHighlightStyle, indentOnInput, indentUnit, syntaxHighlighting } from '@codemirror/language';
import { python } from '@codemirror/lang-python';
import { javascript } from '@codemirror/lang-javascript';
import { shell } from '@codemirror/legacy-modes/mode/shell';
import {
  api, decodeBase64, shortId, describeFailure, el, formatDuration, formatTime, isTerminal, outputText, readJson, session, setBadge,
} from './api.js';
import { setUpSignIn } from './auth.js';

const EXAMPLES = {
  python: `import sys

name = sys.stdin.read().strip() or "world"
print(f"Hello, {name}!")
print("squares:", [n * n for n in range(6)])
`,
  javascript: `const input = require('fs').readFileSync(0, 'utf8').trim();
const name = input || 'world';
console.log(\`Hello, \${name}!\`);
console.log('squares:', [0, 1, 2, 3, 4, 5].map((n) => n * n));
`,
  shell: `read -r name || true
echo "Hello, \${name:-world}!"
for n in 1 2 3; do echo "line $n"; done
`,
};

const LANGUAGES = {
  python: () => python(),
  javascript: () => javascript(),
  shell: () => StreamLanguage.define(shell),
};

const $ = (id) => document.getElementById(id);
const ui = {
  language: $('language'), classification: $('classification'), example: $('example'), stdin: $('stdin'),
  run: $('run'), progress: $('progress'), status: $('status'), exitCode: $('exit-code'), duration: $('duration'),
  runId: $('run-id'), problem: $('problem'), stdout: $('stdout'), stderr: $('stderr'),
  stdoutSha: $('stdout-sha'), stderrSha: $('stderr-sha'), stdoutNote: $('stdout-note'), stderrNote: $('stderr-note'),
  recent: document.querySelector('#recent tbody'), recentNote: $('recent-note'), recentRefresh: $('recent-refresh'),
  files: $('files'), artifacts: $('artifacts'), artifactsNote: $('artifacts-note'),
};

// ---- editor ---------------------------------------------------------------------------------------
const languageSlot = new Compartment();
const editor = new EditorView({
  parent: $('editor'),
  state: EditorState.create({
    doc: EXAMPLES.python,
    extensions: [
      lineNumbers(), highlightActiveLineGutter(), highlightActiveLine(), drawSelection(), history(),
      indentOnInput(), bracketMatching(), indentUnit.of('    '),
      syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
      keymap.of([{ key: 'Mod-Enter', run: () => { run(); return true; } }, ...defaultKeymap, ...historyKeymap]),
      languageSlot.of(LANGUAGES.python()),
      EditorView.contentAttributes.of({ 'aria-label': 'Code', 'aria-describedby': 'editor-help' }),
    ],
  }),
});

ui.language.addEventListener('change', () => {
  const language = ui.language.value;
  const current = editor.state.doc.toString();
  const untouched = !current.trim() || Object.values(EXAMPLES).includes(current);
  editor.dispatch({
    effects: languageSlot.reconfigure(LANGUAGES[language]()),
    ...(untouched ? { changes: { from: 0, to: editor.state.doc.length, insert: EXAMPLES[language] } } : {}),
  });
});
ui.example.addEventListener('click', () => {
  editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: EXAMPLES[ui.language.value] } });
  editor.focus();
});

// Ctrl/Cmd+Enter anywhere on the page (the editor handles it itself first).
document.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !event.defaultPrevented) {
    event.preventDefault();
    run();
  }
});
ui.run.addEventListener('click', () => run());

// ---- sign-in --------------------------------------------------------------------------------------
const signIn = setUpSignIn({ panel: $('signin'), who: $('who'), defaultRole: 'runner', onChange: () => loadRecent() });

// ---- running --------------------------------------------------------------------------------------
let busy = false;
let streamAvailable = null; // null: not known yet; false: the server answered 404, use wait:true
let retryTimer = null;

async function run() {
  if (busy || ui.run.disabled) return;
  if (!session.token || session.expired()) {
    signIn('Sign in first: paste a token or use the development sign-in.');
    return;
  }
  busy = true;
  ui.run.disabled = true;
  resetResult();
  setBadge(ui.status, 'running');
  ui.progress.textContent = 'Running…';
  const body = {
    language: ui.language.value,
    code: editor.state.doc.toString(),
    classification: ui.classification.value,
    ...(ui.stdin.value ? { stdin: ui.stdin.value } : {}),
  };
  // With files the run goes as multipart/form-data (each file under its own name), as `curl -F` would send it.
  const send = (wait) => {
    if (!ui.files.files.length) return { ...body, wait };
    const form = new FormData();
    for (const [name, value] of Object.entries({ ...body, wait: String(wait) })) form.append(name, value);
    for (const file of ui.files.files) form.append(file.name, file, file.name);
    return form;
  };
  try {
    if (streamAvailable === false) {
      await showResponse(await api('/v1/runs', { method: 'POST', body: send(true) }));
    } else {
      const response = await api('/v1/runs', { method: 'POST', body: send(false) });
      if (response.status !== 202) {
        await showResponse(response);
      } else {
        const accepted = await readJson(response);
        remember(accepted.runId);
        showRunId(accepted.runId);
        streamAvailable = await streamOutput(accepted.runId);
        showRun(await waitForEnd(accepted.runId));
      }
    }
  } catch (error) {
    setBadge(ui.status, 'error');
    showProblem({ title: 'Could not reach the service', detail: String(error?.message ?? error), reasons: [] });
  } finally {
    busy = false;
    if (!retryTimer) ui.run.disabled = false;
    ui.progress.textContent = '';
    loadRecent();
  }
}

async function showResponse(response) {
  const body = await readJson(response);
  if (response.ok) {
    remember(body.runId);
    showRun(body);
    return;
  }
  const failure = describeFailure(response, body);
  if (failure.runId) {
    remember(failure.runId);
    showRunId(failure.runId);
  }
  setBadge(ui.status, failure.kind === 'denied' ? 'denied' : failure.kind === 'retry' ? 'refused' : 'error');
  showProblem(failure);
  if (failure.kind === 'signin') signIn(failure.detail);
  if (failure.kind === 'retry' && failure.retryAfter != null) holdUntil(failure.retryAt);
}

/** Reads GET /v1/runs/{id}/stream (server-sent events) into the output panes. False when the server has no stream endpoint. */
async function streamOutput(runId) {
  let response;
  try {
    response = await api(`/v1/runs/${runId}/stream`, { accept: 'text/event-stream' });
  } catch {
    return true;
  }
  if (response.status === 404 || response.status === 405) return false;
  if (!response.ok || !response.body) return true;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (onServerEvent(parseEvent(block)) === 'end') {
        reader.cancel().catch(() => {});
        return true;
      }
    }
  }
  return true;
}

function parseEvent(block) {
  const event = { event: 'message', data: '' };
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') data.push(value);
    else if (field === 'event') event.event = value;
  }
  event.data = data.join('\n');
  return event;
}

const TERMINAL_EVENTS = new Set(['run_completed', 'run_failed', 'run_abandoned', 'completed', 'end', 'done']);

function onServerEvent({ event, data }) {
  let payload;
  try { payload = JSON.parse(data); } catch { payload = data; }
  const stream = ['stdout', 'stderr'].includes(event) ? event : (typeof payload === 'object' ? payload?.stream : null);
  if (stream === 'stdout' || stream === 'stderr') {
    let text = typeof payload === 'string' ? payload : (payload?.content ?? payload?.text ?? payload?.chunk ?? payload?.data ?? '');
    if (typeof payload === 'object' && payload?.encoding === 'base64') text = decodeBase64(text);
    (stream === 'stdout' ? ui.stdout : ui.stderr).append(text);
    return null;
  }
  const type = (typeof payload === 'object' && payload?.type) || event;
  ui.progress.textContent = `Running… (${String(type).replace(/_/g, ' ')})`;
  return TERMINAL_EVENTS.has(type) || TERMINAL_EVENTS.has(event) ? 'end' : null;
}

async function waitForEnd(runId) {
  const deadline = Date.now() + 180_000;
  for (let delay = 100; ; delay = Math.min(delay * 1.5, 1000)) {
    const response = await api(`/v1/runs/${runId}`);
    const body = await readJson(response);
    if (!response.ok) throw new Error(body?.detail ?? `GET /v1/runs/${runId} answered ${response.status}`);
    if (isTerminal(body.status) || Date.now() > deadline) return body;
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

// ---- showing a run --------------------------------------------------------------------------------
function resetResult() {
  for (const pane of [ui.stdout, ui.stderr]) pane.textContent = '';
  for (const node of [ui.stdoutSha, ui.stderrSha]) node.textContent = '—';
  for (const node of [ui.stdoutNote, ui.stderrNote]) node.textContent = '';
  ui.exitCode.textContent = '—';
  ui.duration.textContent = '—';
  ui.runId.textContent = '—';
  ui.problem.hidden = true;
  ui.problem.replaceChildren();
  ui.artifacts.replaceChildren();
}

function showRunId(runId) {
  ui.runId.replaceChildren(el('a', { href: `/audit/?run=${runId}`, text: shortId(runId), title: runId, 'aria-label': `Run ${runId}` }));
}

/** Lists a run's artifacts; each downloads through fetch (the token is a header, not a cookie) with its digest shown. */
async function showArtifacts(runId) {
  const response = await api(`/v1/runs/${runId}/artifacts`).catch(() => null);
  const artifacts = response?.ok ? await readJson(response) : [];
  ui.artifactsNote.textContent = artifacts.length ? '' : 'No artifacts: the program wrote nothing under out/.';
  ui.artifacts.replaceChildren(...artifacts.map((artifact) => {
    const facts = artifact.status === 'stored'
      ? `${artifact.bytes} bytes · ${artifact.mediaType} · SHA-256 `
      : `${artifact.status}: ${artifact.reason}`;
    const item = el('li', { class: 'artifact', 'data-status': artifact.status });
    if (artifact.href) {
      const link = el('a', { href: '#', text: artifact.name, 'aria-label': `Download ${artifact.name}` });
      link.addEventListener('click', async (event) => {
        event.preventDefault();
        const file = await api(artifact.href, { accept: '*/*' });
        if (!file.ok) return;
        const url = URL.createObjectURL(await file.blob());
        const save = el('a', { href: url, download: artifact.name.split('/').pop() });
        save.click();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      });
      item.append(link);
    } else {
      item.append(el('span', { text: artifact.name }));
    }
    item.append(el('span', { class: 'muted', text: ` ${facts}` }));
    if (artifact.sha256) item.append(el('code', { text: artifact.sha256, title: 'SHA-256 of the artifact' }));
    return item;
  }));
}

function showRun(view) {
  resetResult();
  if (view.runId && isTerminal(view.status) && !['denied', 'rejected', 'refused'].includes(view.status)) {
    showArtifacts(view.runId);
  }
  setBadge(ui.status, view.status);
  showRunId(view.runId);
  ui.exitCode.textContent = view.exitCode ?? (view.signal != null ? `signal ${view.signal}` : '—');
  ui.duration.textContent = formatDuration(view.durationMs ?? view.wallMs);
  for (const [name, pane, sha, note] of [['stdout', ui.stdout, ui.stdoutSha, ui.stdoutNote], ['stderr', ui.stderr, ui.stderrSha, ui.stderrNote]]) {
    const output = view[name];
    pane.textContent = outputText(output);
    sha.textContent = output?.sha256 ?? '—';
    sha.title = output?.sha256 ?? '';
    const notes = [];
    if (output) notes.push(`${output.bytes} bytes`);
    if (output?.truncated) notes.push(`truncated (produced ${output.producedBytes} bytes)`);
    if (output?.encoding === 'base64') notes.push('binary, shown decoded');
    note.textContent = notes.join(' · ');
  }
  const limits = view.limits ?? {};
  if (view.status === 'denied') {
    showProblem({ kind: 'denied', title: 'Denied by policy', detail: 'The policy gave these reasons:', reasons: view.policy?.reasons ?? [] });
  } else if (view.status === 'timed_out') {
    showProblem({ title: 'Timed out', detail: `The run was stopped at its time limit${limits.timeoutMs ? ` of ${limits.timeoutMs} ms` : ''}.`, reasons: [] });
  } else if (view.status === 'memory_exceeded') {
    showProblem({ title: 'Memory exceeded', detail: `The run was stopped at its memory limit${limits.memoryMb ? ` of ${limits.memoryMb} MB` : ''}.`, reasons: [] });
  } else if (view.status === 'pids_exhausted') {
    showProblem({ title: 'Process limit hit', detail: `The run reached its limit${limits.pids ? ` of ${limits.pids} processes` : ''}.`, reasons: [] });
  } else if (['error', 'abandoned', 'rejected', 'refused'].includes(view.status)) {
    showProblem({ title: 'The run did not complete', detail: view.reason ?? '', reasons: view.errors ?? [] });
  }
}

function showProblem({ kind, title, detail, reasons = [], retryAt, runId }) {
  ui.problem.dataset.kind = kind ?? 'error';
  const children = [el('strong', { text: title })];
  if (detail) children.push(el('p', { text: detail }));
  if (reasons.length) children.push(el('ul', { class: 'reasons' }, reasons.map((reason) => el('li', { text: reason }))));
  if (retryAt) {
    children.push(el('p', { class: 'retry' },
      'Retry after ', el('time', { datetime: retryAt.toISOString(), text: retryAt.toLocaleTimeString(undefined, { hour12: false }) }),
      el('span', { class: 'countdown', text: '' })));
  }
  if (runId) children.push(el('p', { class: 'muted small', text: `The attempt was recorded as run ${runId}.` }));
  ui.problem.replaceChildren(...children);
  ui.problem.hidden = false;
}

/** After a 429 or 503: the Run button counts down to the time the service gave. */
function holdUntil(retryAt) {
  clearInterval(retryTimer);
  const tick = () => {
    const left = Math.ceil((retryAt - Date.now()) / 1000);
    const countdown = ui.problem.querySelector('.countdown');
    if (left <= 0) {
      clearInterval(retryTimer);
      retryTimer = null;
      ui.run.disabled = false;
      ui.run.textContent = 'Run';
      if (countdown) countdown.textContent = ' (now)';
      return;
    }
    ui.run.disabled = true;
    ui.run.textContent = `Retry in ${left} s`;
    if (countdown) countdown.textContent = ` (in ${left} s)`;
  };
  retryTimer = setInterval(tick, 500);
  tick();
}

// ---- recent runs ----------------------------------------------------------------------------------
const recentKey = () => `sbx.recent.${session.claims()?.tenant}/${session.claims()?.sub}`;

function remember(runId) {
  if (!runId) return;
  const ids = JSON.parse(sessionStorage.getItem(recentKey()) ?? '[]').filter((id) => id !== runId);
  sessionStorage.setItem(recentKey(), JSON.stringify([runId, ...ids].slice(0, 20)));
}

let recentGeneration = 0;

async function loadRecent() {
  const generation = ++recentGeneration;
  const claims = session.claims();
  if (!claims || session.expired()) {
    ui.recent.replaceChildren();
    ui.recentNote.textContent = 'Sign in to see your runs.';
    return;
  }
  let runs = null;
  const audit = await api(`/v1/audit/runs?subject=${encodeURIComponent(claims.sub)}&limit=10`).catch(() => null);
  if (audit?.ok) {
    runs = ((await readJson(audit))?.items ?? []).map((item) => ({ ...item, runId: item.runId ?? item.id ?? item.streamId }));
    ui.recentNote.textContent = 'From the audit log.';
  } else {
    const ids = JSON.parse(sessionStorage.getItem(recentKey()) ?? '[]').slice(0, 10);
    const views = await Promise.all(ids.map(async (id) => {
      const response = await api(`/v1/runs/${id}`).catch(() => null);
      return response?.ok ? readJson(response) : null;
    }));
    runs = views.filter(Boolean);
    ui.recentNote.textContent = 'Runs started in this browser tab.';
  }
  if (generation !== recentGeneration) return;
  ui.recent.replaceChildren(...runs.map((run) => el('tr', {},
    el('td', {}, el('time', { datetime: run.requestedAt ?? '', text: formatTime(run.requestedAt) })),
    el('td', { text: run.language ?? '—' }),
    el('td', {}, el('span', { class: 'badge', 'data-status': run.status, text: run.status })),
    el('td', { text: run.exitCode ?? '—' }),
    el('td', { text: formatDuration(run.durationMs) }),
    el('td', {}, el('button', {
      type: 'button', class: 'link mono', text: shortId(run.runId), title: run.runId, 'aria-label': `Show run ${run.runId}`,
      onclick: () => showStored(run.runId),
    })))));
  if (!runs.length) ui.recentNote.textContent = 'No runs yet.';
  for (const badge of ui.recent.querySelectorAll('.badge')) setBadge(badge, badge.dataset.status);
}

async function showStored(runId) {
  const response = await api(`/v1/runs/${runId}`);
  const body = await readJson(response);
  if (response.ok) showRun(body);
  else showProblem(describeFailure(response, body));
}

ui.recentRefresh.addEventListener('click', () => loadRecent());
loadRecent();
