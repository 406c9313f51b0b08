// Sign-in shared by both pages: paste a token, or (development mode only) ask the service for one.
import { api, el, readJson, session } from './api.js';

/**
 * Renders the sign-in panel into `panel` and the "signed in as" line into `who`, then calls
 * `onChange()` whenever the token changes. Returns a function that shows the panel with a message.
 */
export function setUpSignIn({ panel, who, defaultRole = 'runner', onChange }) {
  const error = el('p', { class: 'error', role: 'alert', id: 'signin-error' });
  const tokenInput = el('textarea', {
    id: 'token-input', rows: '3', autocomplete: 'off', spellcheck: 'false', placeholder: 'eyJhbGciOi…',
  });
  const tokenForm = el('form', { class: 'stack', id: 'token-form' },
    el('label', { for: 'token-input', text: 'Paste a bearer token' }),
    tokenInput,
    el('div', {}, el('button', { type: 'submit', class: 'primary', text: 'Use this token' })));

  const devSub = el('input', { id: 'dev-sub', value: 'dev-user', autocomplete: 'off', required: true, maxlength: '64' });
  const devTenant = el('input', { id: 'dev-tenant', value: 'dev', autocomplete: 'off', required: true, maxlength: '64' });
  const devRole = el('select', { id: 'dev-role' },
    el('option', { value: 'runner', text: 'runner' }),
    el('option', { value: 'auditor', text: 'auditor' }),
    el('option', { value: 'runner,auditor', text: 'runner and auditor' }));
  devRole.value = defaultRole;
  const devForm = el('form', { id: 'dev-form', hidden: true },
    el('fieldset', {},
      el('legend', { text: 'Development sign-in' }),
      el('p', { class: 'muted', text: 'This service runs in development mode: it can mint a short-lived token for any name.' }),
      el('div', { class: 'row' },
        el('span', { class: 'field' }, el('label', { for: 'dev-sub', text: 'Subject' }), devSub),
        el('span', { class: 'field' }, el('label', { for: 'dev-tenant', text: 'Tenant' }), devTenant),
        el('span', { class: 'field' }, el('label', { for: 'dev-role', text: 'Role' }), devRole)),
      el('div', {}, el('button', { type: 'submit', id: 'dev-signin', text: 'Get a development token' }))));

  panel.replaceChildren(
    el('h2', { id: 'signin-title', text: 'Sign in' }),
    tokenForm, devForm, error);
  panel.setAttribute('aria-labelledby', 'signin-title');

  const show = (message = '') => {
    error.textContent = message;
    panel.hidden = false;
    render();
  };

  function render() {
    const claims = session.claims();
    if (!claims || session.expired()) {
      who.replaceChildren(el('span', { class: 'muted', text: session.expired() ? 'Token expired' : 'Not signed in' }));
      panel.hidden = false;
      return;
    }
    panel.hidden = !error.textContent;
    who.replaceChildren(
      el('span', { id: 'who-name', text: `${claims.sub || '?'} @ ${claims.tenant || '?'}` }),
      el('span', { class: 'roles', text: claims.roles.join(', ') || 'no roles' }),
      el('button', { type: 'button', class: 'link', id: 'signout', text: 'Sign out', onclick: () => {
        session.clear();
        error.textContent = '';
        render();
        onChange();
      } }));
  }

  tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = tokenInput.value.trim();
    if (token.split('.').length !== 3) {
      error.textContent = 'That does not look like a JWT (three dot-separated parts).';
      return;
    }
    session.set(token);
    tokenInput.value = '';
    error.textContent = '';
    render();
    onChange();
  });

  devForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const response = await fetch('/v1/dev/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ subject: devSub.value.trim(), tenant: devTenant.value.trim(), roles: devRole.value.split(',') }),
    });
    const body = await readJson(response);
    if (!response.ok) {
      error.textContent = [body?.title, body?.detail, ...(body?.errors ?? [])].filter(Boolean).join(' ');
      return;
    }
    session.set(body.token);
    render();
    onChange();
  });

  // The development sign-in exists only when the service says so (it is not mapped at all in oidc mode).
  api('/v1/dev').then((response) => { devForm.hidden = !response.ok; }).catch(() => {});

  render();
  return show;
}
