// The audit viewer: runs with filters (GET /v1/audit/runs), exports (GET /v1/audit/export), and a run's
// timeline (GET /v1/runs/{id}/events) with a badge that says whether the hash chain verifies
// (GET /v1/audit/verify: the hashes are over a canonical form that only the server computes).
import { api, describeFailure, el, formatDuration, formatTime, readJson, session, setBadge, shortId } from './api.js';
import { setUpSignIn } from './auth.js';

const $ = (id) => document.getElementById(id);
const ui = {
  filters: $('filters'), runs: document.querySelector('#runs tbody'), runsNote: $('runs-note'), more: $('more'),
  openRun: $('open-run'), runIdInput: $('run-id-input'), timeline: $('timeline'), timelineTitle: $('timeline-title'),
  chain: $('chain'), facts: $('run-facts'), events: $('events'), timelineNote: $('timeline-note'), roleNote: $('role-note'),
};

const signIn = setUpSignIn({ panel: $('signin'), who: $('who'), defaultRole: 'auditor', onChange: () => start() });

// ---- run list -------------------------------------------------------------------------------------
let nextCursor = null;

function filterQuery() {
  const query = new URLSearchParams();
  for (const [name, value] of new FormData(ui.filters)) {
    if (!value) continue;
    query.set(name, name === 'from' || name === 'to' ? new Date(value).toISOString() : value);
  }
  return query;
}

async function loadRuns({ append = false } = {}) {
  const query = filterQuery();
  query.set('limit', '50');
  if (append && nextCursor) query.set('cursor', nextCursor);
  if (!append) ui.runs.replaceChildren();
  ui.runsNote.textContent = 'Loading…';
  const response = await api(`/v1/audit/runs?${query}`);
  const body = await readJson(response);
  if (response.status === 404) {
    ui.runsNote.textContent = 'Audit endpoints unavailable on this server. You can still open a run by its id below.';
    ui.more.hidden = true;
    return;
  }
  if (!response.ok) {
    const failure = describeFailure(response, body);
    ui.runsNote.textContent = `${failure.title}. ${failure.detail}`;
    if (failure.kind === 'signin') signIn(failure.detail);
    return;
  }
  const items = body?.items ?? [];
  nextCursor = body?.nextCursor ?? null;
  ui.more.hidden = !nextCursor;
  ui.runs.append(...items.map(runRow));
  const shown = ui.runs.children.length;
  ui.runsNote.textContent = shown ? `${shown} run${shown === 1 ? '' : 's'}${nextCursor ? ' (more available)' : ''}.` : 'No runs match these filters.';
}

function runRow(item) {
  const run = { ...item, runId: item.runId ?? item.id ?? item.streamId };
  const status = el('span', { class: 'badge' });
  setBadge(status, run.status);
  const decision = run.decision ?? run.policy?.decision ?? '—';
  return el('tr', {},
    el('td', {}, el('time', { datetime: run.requestedAt ?? '', text: formatTime(run.requestedAt) })),
    el('td', {}, el('button', {
      type: 'button', class: 'link mono', text: shortId(run.runId), title: run.runId,
      'aria-label': `Open the timeline of run ${run.runId}`, onclick: () => openRun(run.runId),
    })),
    el('td', { text: run.subject ?? '—' }),
    el('td', { text: run.language ?? '—' }),
    el('td', {}, status),
    el('td', {}, el('span', { class: 'decision', 'data-decision': decision, text: decision })),
    el('td', { text: formatDuration(run.durationMs) }));
}

ui.filters.addEventListener('submit', (event) => {
  event.preventDefault();
  loadRuns();
});
ui.more.addEventListener('click', () => loadRuns({ append: true }));

async function exportAs(format) {
  const query = filterQuery();
  query.set('format', format);
  const response = await api(`/v1/audit/export?${query}`, { accept: format === 'csv' ? 'text/csv' : 'application/x-ndjson' });
  if (!response.ok) {
    const failure = response.status === 404
      ? { title: 'Export unavailable', detail: 'This server has no audit export endpoint.' }
      : describeFailure(response, await readJson(response));
    ui.runsNote.textContent = `${failure.title}. ${failure.detail}`;
    return;
  }
  const blob = await response.blob();
  const link = el('a', { href: URL.createObjectURL(blob), download: `audit-${new Date().toISOString().replace(/[:.]/g, '-')}.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  ui.runsNote.textContent = `Exported ${format.toUpperCase()} (${blob.size} bytes).`;
}
$('export-ndjson').addEventListener('click', () => exportAs('ndjson'));
$('export-csv').addEventListener('click', () => exportAs('csv'));

// ---- timeline -------------------------------------------------------------------------------------
ui.openRun.addEventListener('submit', (event) => {
  event.preventDefault();
  openRun(ui.runIdInput.value.trim());
});

async function openRun(runId, { push = true } = {}) {
  if (push) history.pushState({ run: runId }, '', `?run=${encodeURIComponent(runId)}`);
  ui.timeline.hidden = false;
  ui.timelineTitle.textContent = `Timeline of run ${runId}`;
  ui.facts.replaceChildren();
  ui.events.replaceChildren();
  setChain('checking');
  ui.timelineNote.textContent = 'Loading…';
  ui.timelineTitle.focus();

  const [runResponse, eventsResponse] = await Promise.all([api(`/v1/runs/${runId}`), api(`/v1/runs/${runId}/events`)]);
  const run = await readJson(runResponse);
  const events = await readJson(eventsResponse);
  if (!runResponse.ok || !eventsResponse.ok) {
    const failure = describeFailure(runResponse.ok ? eventsResponse : runResponse, runResponse.ok ? events : run);
    ui.timelineNote.textContent = `${failure.title}. ${failure.detail}`;
    setChain('unavailable');
    return;
  }
  ui.timelineNote.textContent = `${events.length} events, oldest first.`;
  ui.facts.replaceChildren(...fact('Subject', run.subject), ...fact('Tenant', run.tenant), ...fact('Language', run.language),
    ...fact('Status', run.status), ...fact('Decision', run.policy?.decision), ...fact('Exit code', run.exitCode),
    ...fact('Duration', formatDuration(run.durationMs)), ...fact('Code SHA-256', run.codeSha256, true));
  ui.events.replaceChildren(...events.map(eventItem));
  verify(runId, events.length);
}

function fact(name, value, mono = false) {
  return [el('dt', { text: name }), el('dd', { class: mono ? 'mono' : null, text: value == null || value === '' ? '—' : String(value) })];
}

async function verify(runId, count) {
  const response = await api(`/v1/audit/verify?runId=${encodeURIComponent(runId)}`).catch(() => null);
  if (!response || response.status === 404 || response.status === 405) {
    setChain('unavailable');
    return;
  }
  const body = await readJson(response);
  if (!response.ok) {
    setChain('unavailable', describeFailure(response, body).title);
    return;
  }
  if (body.verified) setChain('verified', `${body.checked ?? count} events checked`);
  else setChain('broken', body.firstBroken != null ? `first broken: ${typeof body.firstBroken === 'object' ? JSON.stringify(body.firstBroken) : body.firstBroken}` : '');
}

function setChain(state, detail = '') {
  const text = {
    checking: 'Chain: checking…',
    verified: 'Chain verified',
    broken: 'Chain broken',
    unavailable: 'Verification unavailable',
  }[state];
  ui.chain.dataset.chain = state;
  ui.chain.textContent = detail ? `${text} (${detail})` : text;
  ui.chain.title = state === 'unavailable' ? 'The server has no verification endpoint, or refused to verify.' : '';
}

function eventItem(event) {
  const short = (hash) => (hash ? `${hash.slice(0, 12)}…` : '—');
  return el('li', { class: 'event', 'data-type': event.type },
    el('div', { class: 'event-head' },
      el('span', { class: 'seq', text: `#${event.version}` }),
      el('strong', { class: 'type', text: event.type }),
      el('time', { datetime: event.timestamp, text: new Date(event.timestamp).toISOString().replace('T', ' ').replace('Z', ' UTC') })),
    el('ul', { class: 'keyfacts' }, keyFacts(event).map(([k, v]) => el('li', {}, el('span', { class: 'k', text: `${k}: ` }), el('span', { text: v == null || v === '' ? '—' : String(v) })))),
    el('p', { class: 'hashes mono' },
      el('span', { title: event.hash ?? '' }, 'hash ', el('code', { class: 'hash', text: short(event.hash) })),
      el('span', { title: event.prevHash ?? '' }, ' ← prev ', el('code', { text: short(event.prevHash) }))),
    el('details', {}, el('summary', { text: 'All data' }), el('pre', { class: 'json', text: JSON.stringify(event.data, null, 2) })));
}

const join = (list) => (Array.isArray(list) && list.length ? list.join(', ') : '—');
const sha = (value) => (value ? `${value.slice(0, 16)}…` : '—');

/** The few facts of each event type that a reader wants at a glance (the rest is under "All data"). */
function keyFacts({ type, data = {} }) {
  switch (type) {
    case 'run_requested':
      return [['caller', `${data.caller?.subject} @ ${data.caller?.tenant} (${join(data.caller?.roles)})`], ['language', data.language],
        ['code', `${data.codeBytes} bytes, sha256 ${sha(data.codeSha256)}`], ['classification', data.classification], ['node', data.node],
        ...(data.files ?? []).map((f) => [`input ${f.name}`, `${f.bytes} bytes, sha256 ${sha(f.sha256)}`])];
    case 'request_rejected':
      return [['HTTP', data.httpStatus], ['errors', join(data.errors)]];
    case 'policy_evaluated':
      return [['decision', data.decision], ['rules', join(data.ruleIds)], ['reasons', join(data.reasons)], ['findings', join(data.findings)]];
    case 'run_queued':
      return [['queued by', data.queuedBy], ['claimed by', data.claimedBy ?? 'any executor']];
    case 'late_outcome_recorded':
      return [['node', data.node], ['meant', `${data.terminal} ${data.status ?? ''}`], ['exit code', data.exitCode], ['reason', data.reason]];
    case 'sandbox_created':
      return [['image', data.image], ['container', String(data.containerId ?? '').slice(0, 12)], ['from pool', data.fromPool],
        ['network', data.settings?.networkMode], ['memory', data.settings?.memoryBytes ? `${data.settings.memoryBytes / 1048576} MiB` : '—']];
    case 'sandbox_started':
    case 'sandbox_removed':
      return [['container', String(data.containerId ?? '').slice(0, 12)]];
    case 'sandbox_exited':
      return [['exit code', data.exitCode ?? '—'], ['signal', data.signal ?? '—'], ['timed out', data.timedOut], ['OOM', data.oomKilled],
        ['wall', formatDuration((data.wallUs ?? 0) / 1000)]];
    case 'output_recorded':
      return [['stdout', `${data.stdout?.bytes} bytes, sha256 ${sha(data.stdout?.sha256)}`], ['stderr', `${data.stderr?.bytes} bytes, sha256 ${sha(data.stderr?.sha256)}`]];
    case 'artifact_recorded':
      return [['artifact', data.name], ['status', data.reason ? `${data.status} (${data.reason})` : data.status],
        ...(data.sha256 ? [['content', `${data.bytes} bytes, sha256 ${sha(data.sha256)}`], ['media type', data.mediaType]] : [])];
    case 'run_completed':
      return [['status', data.status], ['exit code', data.exitCode ?? '—'], ['duration', formatDuration(data.durationMs)], ...(data.reason ? [['reason', data.reason]] : [])];
    case 'run_failed':
    case 'run_abandoned':
      return [['reason', data.reason]];
    default:
      return Object.entries(data).filter(([k, v]) => k !== 'runId' && k !== 'at' && v != null && typeof v !== 'object').slice(0, 5);
  }
}

// ---- start ----------------------------------------------------------------------------------------
// ---- checkpoints (POST /v1/audit/checkpoints, GET /v1/audit/checkpoints/verify) ------------------
const checkpoints = {
  state: $('checkpoint-state'), note: $('checkpoint-note'), head: $('checkpoint-head'),
  take: $('take-checkpoint'), verify: $('verify-checkpoints'),
};

function setCheckpointState(state, text) {
  checkpoints.state.dataset.chain = state;
  checkpoints.state.textContent = text;
}

checkpoints.take.addEventListener('click', async () => {
  checkpoints.note.textContent = 'Taking a checkpoint…';
  const response = await api('/v1/audit/checkpoints', { method: 'POST' });
  const body = await readJson(response);
  if (!response.ok) {
    const failure = describeFailure(response, body);
    checkpoints.note.textContent = `${failure.title}. ${failure.detail}`;
    return;
  }
  checkpoints.head.replaceChildren(...fact('Checkpoint', body.sequence), ...fact('Covers events up to sequence', body.toSequence),
    ...fact('Events', body.treeSize), ...fact('Root', body.rootHash, true), ...fact('Signed by key', body.keyId ?? 'not signed', true),
    ...fact('Taken', `${formatTime(body.at)} by ${body.subject}`));
  checkpoints.head.hidden = false;
  checkpoints.note.textContent = 'Checkpoint recorded. Keep its sequence, events and root somewhere this service cannot change.';
});

checkpoints.verify.addEventListener('click', async () => {
  setCheckpointState('checking', 'Checking…');
  const response = await api('/v1/audit/checkpoints/verify');
  const body = await readJson(response);
  if (!response.ok) {
    const failure = describeFailure(response, body);
    setCheckpointState('unknown', 'Not verified');
    checkpoints.note.textContent = `${failure.title}. ${failure.detail}`;
    return;
  }
  const mismatch = body.firstMismatch;
  if (body.verified) setCheckpointState('verified', `Checkpoints verified (${body.checkpointsChecked} checked)`);
  else setCheckpointState('broken', 'Checkpoint mismatch');
  checkpoints.note.textContent = body.verified
    ? `${body.eventsRead} events read; every recorded head matches the record${body.checkpointsChecked === 0 ? ' (there are none yet)' : ''}.`
    : `Checkpoint ${mismatch.checkpointSequence ?? '(kept head)'}: ${mismatch.reason}. Expected ${mismatch.expectedTreeSize} events, found ${mismatch.actualTreeSize}.`;
});

function start() {
  const claims = session.claims();
  const signedIn = claims && !session.expired();
  ui.roleNote.hidden = !signedIn || claims.roles.includes('auditor') || claims.roles.includes('admin');
  ui.roleNote.textContent = 'This page is for auditors: your token has no auditor role, so you will see only your own runs, if anything.';
  if (!signedIn) {
    ui.runs.replaceChildren();
    ui.runsNote.textContent = 'Sign in as an auditor to see runs.';
    return;
  }
  loadRuns();
  const runId = new URLSearchParams(location.search).get('run');
  if (runId) openRun(runId, { push: false });
}

window.addEventListener('popstate', () => {
  const runId = new URLSearchParams(location.search).get('run');
  if (runId) openRun(runId, { push: false });
  else ui.timeline.hidden = true;
});

start();
