// A standard EventSource client (npm `eventsource`) reads a run's stream. The first connection is cut right after
// the first stdout message, so the client reconnects with Last-Event-ID on its own; after `end` it reconnects once
// more, gets 204 and stops. Every message must arrive exactly once. Run by StreamContractTests (xunit).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';

const base = process.env.SBX_BASE_URL;
const token = process.env.SBX_RUNNER_TOKEN;
const names = ['run_requested', 'policy_evaluated', 'run_queued', 'sandbox_created', 'sandbox_started', 'sandbox_running',
  'stdout', 'stderr', 'sandbox_exited', 'output_recorded', 'run_completed', 'run_failed', 'run_abandoned', 'late_outcome_recorded', 'sandbox_removed', 'end'];

test('an EventSource client sees each message of a run exactly once, resumes after a cut and stops after the end', async () => {
  const started = await fetch(new URL('/v1/runs', base), {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ language: 'python', code: 'import time\nprint("one", flush=True)\ntime.sleep(1)\nprint("two")', wait: false }),
  });
  assert.equal(started.status, 202);
  const { runId } = await started.json();

  const requests = [];
  const seen = [];
  const source = new EventSource(new URL(`/v1/runs/${runId}/stream`, base), {
    fetch: async (url, init) => {
      const headers = { ...init.headers, authorization: `Bearer ${token}` };
      requests.push(headers['last-event-id'] ?? headers['Last-Event-ID'] ?? null);
      const response = await fetch(url, { ...init, headers });
      return requests.length === 1 ? cutAfterFirstStdout(response) : response;
    },
  });
  for (const name of names)
    source.addEventListener(name, (e) => seen.push({ name, id: e.lastEventId, data: JSON.parse(e.data) }));

  const stopped = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), 30_000);
    source.addEventListener('error', (e) => {
      if (source.readyState === EventSource.CLOSED) { clearTimeout(timer); resolve(e.code); }
    });
  });
  source.close();

  assert.equal(stopped, 204, `the client did not stop with 204; requests: ${JSON.stringify(requests)}`);
  assert.equal(requests.length, 3, `connections: ${JSON.stringify(requests)}`);
  assert.equal(requests[0], null);
  assert.match(requests[1], /^\d+-\d+-\d+-[01]$/);
  assert.equal(requests[2], 'end');

  const ids = seen.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, `an id arrived twice: ${ids.join(' ')}`);
  assert.ok(ids.every((id) => id.length > 0), 'a message had no id');
  const counted = (name) => seen.filter((e) => e.name === name).length;
  for (const name of ['run_requested', 'policy_evaluated', 'sandbox_running', 'sandbox_exited', 'output_recorded', 'run_completed', 'end'])
    assert.equal(counted(name), 1, `${name} arrived ${counted(name)} times: ${seen.map((e) => e.name).join(' ')}`);
  assert.equal(seen.filter((e) => e.name === 'stdout').map((e) => e.data.text).join(''), 'one\ntwo\n');
  assert.equal(seen.at(-1).name, 'end');
  assert.equal(seen.at(-1).data.status, 'succeeded');
});

// Passes the body through until the first complete stdout message, then ends it as a dropped connection would.
function cutAfterFirstStdout(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let text = '';
  let sent = 0;
  const body = new ReadableStream({
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) { controller.close(); return; }
      text += decoder.decode(value, { stream: true });
      const at = text.indexOf('event: stdout');
      const end = at < 0 ? -1 : text.indexOf('\n\n', at);
      controller.enqueue(encoder.encode(text.slice(sent, end < 0 ? text.length : end + 2)));
      sent = text.length;
      if (end >= 0) { controller.close(); await reader.cancel(); }
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}
