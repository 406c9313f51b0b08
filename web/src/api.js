// Talking to the service: the bearer token (kept in sessionStorage, so it dies with the tab), JSON
// requests, and RFC 9457 problem details turned into something a person can act on.

const TOKEN_KEY = 'sbx.token';

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token.trim().replace(/^Bearer\s+/i, ''));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
  /** The token's claims, decoded for display only: the service is what checks the signature. */
  claims() {
    const token = this.token;
    if (!token) return null;
    try {
      const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const json = new TextDecoder().decode(Uint8Array.from(atob(payload), (c) => c.charCodeAt(0)));
      const claims = JSON.parse(json);
      const roles = [claims.roles, claims.role, claims.scope?.split(' '), claims.scp]
        .flat().filter((r) => typeof r === 'string').map((r) => r.replace(/^sandbox:/, ''));
      return { sub: claims.sub ?? '', tenant: claims.tenant ?? '', roles: [...new Set(roles)], exp: claims.exp ?? null };
    } catch {
      return { sub: '', tenant: '', roles: [], exp: null, unreadable: true };
    }
  },
  expired() {
    const claims = this.claims();
    return claims?.exp != null && claims.exp * 1000 <= Date.now();
  },
};

export async function api(path, { method = 'GET', body, signal, accept = 'application/json' } = {}) {
  const headers = { Accept: accept };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  // A FormData body goes as multipart/form-data: the browser sets the boundary and streams the files.
  const form = body instanceof FormData;
  if (body !== undefined && !form) headers['Content-Type'] = 'application/json';
  return fetch(path, { method, headers, body: body === undefined ? undefined : form ? body : JSON.stringify(body), signal });
}

export async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text };
  }
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
export function retryAfterSeconds(response) {
  const value = response.headers.get('Retry-After');
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** What went wrong, in words: a heading, a sentence, the reasons (a denied run's policy reasons), when to retry. */
export function describeFailure(response, problem) {
  const type = problem?.type ?? '';
  const status = response.status;
  const retryAfter = retryAfterSeconds(response);
  const reasons = Array.isArray(problem?.errors) ? problem.errors.map(String) : [];
  const failure = {
    status,
    type,
    runId: problem?.runId ?? null,
    reasons,
    retryAfter,
    retryAt: retryAfter == null ? null : new Date(Date.now() + retryAfter * 1000),
    title: problem?.title ?? `Request failed (HTTP ${status})`,
    detail: problem?.detail ?? '',
    kind: 'error',
  };
  if (type.endsWith('/policy-denied')) {
    failure.kind = 'denied';
    failure.title = 'Denied by policy';
    failure.detail = reasons.length ? 'The policy gave these reasons:' : (problem?.detail ?? '');
  } else if (status === 429 || type.endsWith('/rate-limited') || type.endsWith('/capacity-exceeded')) {
    failure.kind = 'retry';
    failure.title = type.endsWith('/capacity-exceeded') ? 'No capacity to run now' : 'Too many runs';
  } else if (status === 401) {
    failure.kind = 'signin';
    failure.title = 'Sign-in needed';
    failure.detail = 'The service did not accept the token: it is missing, expired or invalid. Sign in again.';
  } else if (status === 503) {
    failure.kind = 'retry';
  }
  return failure;
}

export const STATUS_LABELS = {
  idle: 'Not run yet',
  pending: 'Pending',
  queued: 'Queued',
  running: 'Running',
  succeeded: 'Succeeded',
  failed: 'Failed',
  timed_out: 'Timed out',
  memory_exceeded: 'Memory exceeded',
  pids_exhausted: 'Process limit hit',
  output_truncated: 'Output truncated',
  denied: 'Denied by policy',
  rejected: 'Rejected',
  refused: 'Refused (no capacity)',
  error: 'Error',
  abandoned: 'Abandoned',
};

export const statusLabel = (status) => STATUS_LABELS[status] ?? String(status ?? 'unknown').replace(/_/g, ' ');

export const isTerminal = (status) => !['pending', 'queued', 'running', 'requested', 'admitted'].includes(status);

export function formatDuration(ms) {
  if (ms == null) return '—';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function formatTime(value) {
  if (!value) return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString(undefined, { hour12: false });
}

/** Output as text: base64 output is decoded (as UTF-8, with replacement characters for binary bytes). */
export function outputText(output) {
  if (!output) return '';
  if (output.encoding === 'base64') return decodeBase64(output.content ?? '');
  return output.content ?? '';
}

export function decodeBase64(value) {
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(value), (c) => c.charCodeAt(0)));
  } catch {
    return value;
  }
}

/** Tiny DOM helper: el('li', { class: 'x', text: 'y' }, child, …). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) node.append(child);
  }
  return node;
}

/** Run ids are UUIDv7: the first digits are a timestamp, so the last ones tell runs apart. */
export const shortId = (id) => `…${String(id).slice(-8)}`;

export function setBadge(badge, status) {
  badge.dataset.status = status;
  badge.textContent = statusLabel(status);
}
