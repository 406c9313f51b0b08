// A client generated from the served OpenAPI document (openapi-typescript + openapi-fetch), type-checked with
// `tsc --strict` and run against the real service by OpenApiContractTests: the API's types all come from the document.
import createClient from 'openapi-fetch';
import type { components, paths } from './generated/schema.js';

type Problem = components['schemas']['Problem'];

const baseUrl = process.env.SBX_BASE_URL;
const token = process.env.SBX_RUNNER_TOKEN;
if (!baseUrl || !token) throw new Error('SBX_BASE_URL and SBX_RUNNER_TOKEN are set by OpenApiContractTests');

const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

// Start a run without waiting: 202, the run's id, and Location.
const started = await client.POST('/v1/runs', {
  params: { header: { 'Idempotency-Key': `contract-${Date.now()}` } },
  body: { language: 'python', code: 'print(6 * 7)', wait: false },
});
check(started.response.status === 202, `POST /v1/runs answered ${started.response.status}`);
check(started.data !== undefined, 'no run in the answer');
const runId: string = started.data.runId;
check(started.response.headers.get('Location') === `/v1/runs/${runId}`, 'Location names the run');

// Stream it to the end.
const stream = await client.GET('/v1/runs/{id}/stream', { params: { path: { id: runId } }, parseAs: 'stream' });
check(stream.response.status === 200 && stream.data != null, `stream answered ${stream.response.status}`);
const text = await new Response(stream.data).text();
check(text.includes('event: end'), `the stream did not end:\n${text}`);
const stdout = text.split('\n\n')
  .filter((message) => message.split('\n').includes('event: stdout'))
  .map((message) => (JSON.parse(message.split('\n').find((line) => line.startsWith('data: '))!.slice(6)) as { text: string }).text)
  .join('');
check(stdout === '42\n', `the output was not streamed: ${JSON.stringify(stdout)} in\n${text}`);

// Its events, typed: versions are numbers, hashes strings.
const events = await client.GET('/v1/runs/{id}/events', { params: { path: { id: runId } } });
check(events.data !== undefined, `events answered ${events.response.status}`);
const versions: number[] = events.data.map((e) => e.version);
check(versions.length >= 5 && versions.every((v, i) => v === i + 1), `versions ${versions.join(',')}`);
const last = events.data.at(-1);
check(last !== undefined && typeof last.hash === 'string', 'the last event has a hash');

// The run itself.
const run = await client.GET('/v1/runs/{id}', { params: { path: { id: runId } } });
check(run.data?.status === 'succeeded', `run status ${run.data?.status}`);

// A bad request: a typed problem with its stable type.
const bad = await client.POST('/v1/runs', { body: { language: 'cobol', code: 'DISPLAY 1' } });
check(bad.response.status === 400, `a bad request answered ${bad.response.status}`);
const problem: Problem | undefined = bad.error;
check(problem?.type === '/problems/invalid-request', `problem type ${problem?.type}`);
check(typeof problem.detail === 'string' && problem.detail.length > 0, 'the problem says what is wrong');

console.log(`1 passed, 0 failed: run ${runId} started, streamed, ${versions.length} events read, problem ${problem.type}`);
