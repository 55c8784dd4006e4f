/**
 * The page shell and the building blocks every page shares (form fields, dates, badges).
 * All markup is static text plus escaped values (html.ts): no inline scripts or styles, so the
 * pages run under the strict CSP in security-headers.ts.
 */
import type { BackendName } from '../../config/config.js';
import type { Assets } from './assets.js';
import { html, type SafeHtml } from './html.js';

export type PageName = 'login' | 'signup' | 'dashboard' | 'sessions' | 'account' | 'not-found' | 'unavailable';

export interface Viewer {
  user: { id: number; name: string; email: string };
  csrfToken: string;
  /** The session's public handle: app.js reloads the page when the browser's session changes. */
  handle: string;
  platformId: number | null;
  /** When the session ends however active (ms): app.js says so rather than "inactivity". */
  absoluteExpiresAt: number;
}

export interface PageOptions {
  page: PageName;
  title: string;
  assets: Assets;
  /** Set on pages for a logged-in user: renders the top bar and the CSRF token. */
  viewer?: Viewer;
  /** Why the logout button's post without JavaScript did nothing, shown beside the button. */
  logoutError?: string;
  body: SafeHtml;
}

const NAV: Array<{ page: PageName; href: string; label: string }> = [
  { page: 'dashboard', href: '/', label: 'Dashboard' },
  { page: 'sessions', href: '/sessions', label: 'Sessions' },
  { page: 'account', href: '/account', label: 'Account' },
];

export const BACKEND_LABELS: Record<BackendName, string> = { cookie: 'Cookie', database: 'Database', redis: 'Redis' };

export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? [parts[0], parts[parts.length - 1]] : parts;
  return letters.map((p) => [...(p ?? '')][0]?.toUpperCase() ?? '').join('') || '?';
}

function brand(href: string) {
  return html`<a class="brand" href="${href}"><span class="brand-mark" aria-hidden="true"></span><span class="brand-name">Switchboard</span></a>`;
}

function topBar(page: PageName, viewer: Viewer, logoutError = '') {
  return html`<header class="topbar">
  <div class="topbar-inner">
    ${brand('/')}
    <nav class="nav" aria-label="Main">
      <ul>
        ${NAV.map((item) => html`<li><a href="${item.href}"${item.page === page ? html` aria-current="page"` : ''}>${item.label}</a></li>`)}
      </ul>
    </nav>
    <div class="topbar-user">
      <span class="avatar" aria-hidden="true">${initials(viewer.user.name)}</span>
      <span class="topbar-name">${viewer.user.name}</span>
      <form class="logout-form" method="post" action="/logout">
        <input type="hidden" name="_csrf" value="${viewer.csrfToken}">
        <button class="btn btn-ghost btn-sm" type="submit">Log out</button>
      </form>
      <div class="form-error logout-error" id="logout-error" role="alert" aria-live="assertive">${logoutError}</div>
    </div>
  </div>
</header>`;
}

/** The idle-expiry warning; app.js shows it before the session's expiresAt. */
function idleWarning() {
  return html`<section class="idle-warning" id="idle-warning" aria-labelledby="idle-warning-title" aria-describedby="idle-warning-text" hidden>
  <div class="idle-warning-inner">
    <div>
      <h2 class="idle-warning-title" id="idle-warning-title">Still there?</h2>
      <p id="idle-warning-text">You will be logged out in <span class="idle-countdown" role="timer" id="idle-countdown">—</span> <span id="idle-warning-reason">because of inactivity</span>.</p>
      <p class="idle-warning-note" id="idle-warning-note" aria-live="polite"></p>
    </div>
    <button class="btn btn-primary" type="button" data-action="stay-signed-in">Stay signed in</button>
  </div>
</section>`;
}

export function layout({ page, title, assets, viewer, logoutError, body }: PageOptions): string {
  const doc = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
${viewer ? html`<meta name="csrf-token" content="${viewer.csrfToken}">` : ''}
<title>${title} · Switchboard</title>
<link rel="icon" type="image/svg+xml" href="${assets.url('favicon.svg')}">
<link rel="stylesheet" href="${assets.url('app.css')}">
<script type="module" src="${assets.url('app.js')}"></script>
</head>
<body class="${viewer ? 'app' : 'auth'}" data-page="${page}"${viewer ? html` data-user-id="${viewer.user.id}" data-handle="${viewer.handle}" data-platform-id="${viewer.platformId ?? ''}" data-absolute-expires-at="${viewer.absoluteExpiresAt}"` : ''}>
<a class="skip-link" href="#main">Skip to content</a>
${viewer
  ? html`${topBar(page, viewer, logoutError)}
${idleWarning()}
<main id="main" class="container" tabindex="-1">
<p class="notice" id="page-notice" role="status" aria-live="polite" hidden></p>
${body}
</main>`
  : html`<main id="main" class="auth-main" tabindex="-1">
<div class="auth-card">
${brand('/login')}
${body}
</div>
</main>`}
<div class="visually-hidden" id="announcer" role="status" aria-live="polite"></div>
</body>
</html>
`;
  return doc.value;
}

export interface FieldOptions {
  form: string;
  name: string;
  label: string;
  type?: string;
  autocomplete?: string;
  hint?: string;
  value?: string;
  inputmode?: string;
  maxlength?: number;
  required?: boolean;
  list?: string;
  /** The API's sentence for this field, when a form posted without JavaScript was refused (form-flash.ts). */
  error?: string;
  /** The first refused field of such a form takes the focus. */
  autofocus?: boolean;
}

/**
 * A labelled input with a hint and an error slot. The error slot is filled by app.js from the
 * API's `error.fields[name]` (or by the server, after a form posted without JavaScript); the
 * input points at both with aria-describedby.
 */
export function field(o: FieldOptions) {
  const id = `${o.form}-${o.name}`;
  const described = [o.hint ? `${id}-hint` : '', `${id}-error`].filter(Boolean).join(' ');
  return html`<div class="field">
  <label for="${id}">${o.label}</label>
  ${o.hint ? html`<p class="hint" id="${id}-hint">${o.hint}</p>` : ''}
  <input id="${id}" name="${o.name}" type="${o.type ?? 'text'}"${o.autocomplete ? html` autocomplete="${o.autocomplete}"` : ''}${o.inputmode ? html` inputmode="${o.inputmode}"` : ''}${o.maxlength ? html` maxlength="${o.maxlength}"` : ''}${o.list ? html` list="${o.list}"` : ''}${o.value !== undefined ? html` value="${o.value}"` : ''}${o.required === false ? '' : html` required aria-required="true"`}${o.error ? html` aria-invalid="true"` : ''}${o.autofocus ? html` autofocus` : ''} aria-describedby="${described}">
  <p class="field-error" id="${id}-error" aria-live="polite">${o.error ?? ''}</p>
</div>`;
}

/** The form-wide error (wrong credentials, rate limit, network): announced at once. */
export function formError(form: string, message = '') {
  return html`<div class="form-error" id="${form}-error" role="alert" aria-live="assertive">${message}</div>`;
}

const UTC_FORMAT = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'UTC' });

/**
 * A date the server renders in UTC; app.js rewrites it in the reader's time zone (and, with
 * `relative`, adds "in 2 hours").
 */
export function time(value: Date | number | string, opts: { bind?: string; relative?: boolean } = {}) {
  const d = new Date(value);
  return html`<time datetime="${d.toISOString()}"${opts.bind ? html` data-bind="${opts.bind}"` : ''}${opts.relative ? html` data-relative` : ''}>${UTC_FORMAT.format(d)} UTC</time>`;
}

export function backendBadge(backend: BackendName, bind = false) {
  return html`<span class="badge badge-backend" data-backend="${backend}"${bind ? html` data-bind="backend"` : ''}>${BACKEND_LABELS[backend]}</span>`;
}
