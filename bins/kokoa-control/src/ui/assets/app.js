// Kokoa Proxy Web UI. Each page is drawn from the REST API (/api/v1, the same the CLI
// uses) with the session cookie and the session's CSRF token, and drawn again when the
// control plane's event stream reports a change. Text is always inserted as text, never
// as HTML. The only long-lived request is the event stream; traffic charts, whose figures
// arrive with heartbeats rather than as events, are fetched again every 10 s while shown.
'use strict';

(() => {
  const app = document.getElementById('app');
  if (!app) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const { page, role, id: pageId } = app.dataset;
  const admin = role === 'admin';

  // ------------------------------------------------------------------ helpers

  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || `the control plane answered ${status}`);
      this.status = status;
      this.code = e.code;
      this.field = e.field;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
    const options = { method, headers, credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    if (response.status === 401) {
      location.assign('/login');
      throw new ApiError(401, null);
    }
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    if (!response.ok) throw new ApiError(response.status, json);
    return json;
  }

  // A list endpoint that may not exist in this version of the control plane: null then.
  async function optional(path) {
    try {
      return await api('GET', path);
    } catch (e) {
      if (e.status === 404 || e.status === 405) return null;
      throw e;
    }
  }

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  }

  function ago(iso) {
    if (!iso) return h('span', { class: 'muted' }, 'never');
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    let text;
    if (seconds < 60) text = `${seconds} s ago`;
    else if (seconds < 3600) text = `${Math.floor(seconds / 60)} min ago`;
    else if (seconds < 86400) text = `${Math.floor(seconds / 3600)} h ago`;
    else text = `${Math.floor(seconds / 86400)} d ago`;
    return h('time', { datetime: iso, title: iso }, text);
  }

  function duration(seconds) {
    if (!seconds) return '—';
    const d = Math.floor(seconds / 86400), hrs = Math.floor((seconds % 86400) / 3600);
    const min = Math.floor((seconds % 3600) / 60);
    return d ? `${d} d ${hrs} h` : hrs ? `${hrs} h ${min} min` : `${min} min`;
  }

  const TONE = {
    healthy: 'ok', active: 'ok', valid: 'ok', success: 'ok', info: 'ok', connected: 'ok',
    degraded: 'warn', provisioning: 'warn', pending: 'warn', warning: 'warn', inactive: 'warn',
    unhealthy: 'bad', failed: 'bad', failure: 'bad', expired: 'bad', critical: 'bad',
  };
  const badge = (word) => h('span', { class: `badge ${TONE[word] || 'none'}` }, word || '—');

  function table(headings, rows, empty) {
    if (!rows.length) return h('p', { class: 'muted' }, empty);
    return h('div', { class: 'table-wrap' },
      h('table', { class: 'responsive' },
        h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c, i) =>
          h('td', { 'data-label': headings[i] || '', class: i === headings.length - 1 && headings[i] === '' ? 'actions' : null }, c)))))));
  }

  function notAvailable(what) {
    return h('p', { class: 'notice' }, `${what} is not available in this version of the control plane.`);
  }

  function failure(e) {
    return h('p', { class: 'notice bad', role: 'alert' }, `Could not load this page: ${e.message}`);
  }

  // A form whose inputs carry data-field = the API's field name, so that an error the API
  // reports for a field is shown next to that field.
  function field(label, name, input) {
    const id = `f-${name.replace(/[^a-z0-9]/gi, '-')}-${Math.random().toString(36).slice(2, 7)}`;
    input.id = id;
    input.name = name;
    input.dataset.field = name;
    return h('div', { class: 'field' }, h('label', { for: id }, label), input,
      h('span', { class: 'field-error', 'data-error-for': name, 'aria-live': 'polite' }));
  }

  function clearErrors(form) {
    form.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
    form.querySelectorAll('.field-error').forEach((n) => { n.textContent = ''; });
    const general = form.querySelector('.form-error');
    if (general) general.textContent = '';
  }

  function showError(form, e) {
    const input = e.field && form.querySelector(`[data-field="${CSS.escape(e.field)}"]`);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      const slot = form.querySelector(`[data-error-for="${CSS.escape(e.field)}"]`);
      if (slot) slot.textContent = e.message;
      input.focus();
    } else {
      form.querySelector('.form-error').textContent = e.message;
    }
  }

  function apiForm(attrs, fields, submitLabel, onSubmit) {
    const form = h('form', Object.assign({ class: 'inline', novalidate: true }, attrs),
      fields, h('button', { type: 'submit' }, submitLabel),
      h('p', { class: 'form-error error', role: 'alert' }));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearErrors(form);
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      try {
        await onSubmit(form);
      } catch (e) {
        showError(form, e);
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  const value = (form, name) => form.querySelector(`[data-field="${name}"]`).value.trim();
  const numberOr = (text) => (text === '' ? undefined : Number(text));

  function select(options, selected) {
    return h('select', {}, options.map(([v, label]) =>
      h('option', { value: v, selected: v === selected }, label)));
  }

  function confirmButton(label, question, action) {
    return h('button', {
      type: 'button', class: 'danger',
      onclick: async (event) => {
        if (!window.confirm(question)) return;
        event.target.disabled = true;
        try { await action(); } catch (e) { window.alert(e.message); } finally { event.target.disabled = false; }
      },
    }, label);
  }

  // Starts a key rotation: the node makes a new key (the old one works until the new one
  // carries traffic).
  function rotateButton(path, who) {
    return h('button', {
      type: 'button', class: 'secondary', 'data-action': 'rotate-keys',
      onclick: async (event) => {
        if (!window.confirm(`Rotate the WireGuard key of ${who}? It makes a new key; traffic keeps flowing and the old key goes once the new one works.`)) return;
        event.target.disabled = true;
        try { await api('POST', path); event.target.textContent = 'Rotation started'; } catch (e) { window.alert(e.message); event.target.disabled = false; }
      },
    }, 'Rotate key');
  }

  function section(title, ...content) {
    return h('section', { class: 'panel', 'aria-label': title }, h('h2', {}, title), content);
  }

  // ------------------------------------------------------------------ live updates

  // The event types the control plane emits, listed by the server: a stream names each
  // event by its type, and EventSource has no wildcard, so each is listened for.
  const EVENT_TYPES = ['message', ...(app.dataset.eventKinds || '').split(' ').filter(Boolean)];

  const listeners = [];
  const onEvent = (f) => listeners.push(f);

  function connectLive() {
    const status = document.getElementById('live');
    let wasOpen = false;
    let delay = 2000;
    let source = null;
    // Leaving the page frees its connection at once (browsers allow few per server).
    window.addEventListener('pagehide', () => { if (source) source.close(); });
    const connect = () => {
      source = new EventSource('/api/v1/events/stream');
      source.onopen = () => {
        if (wasOpen) refresh();
        wasOpen = true;
        delay = 2000;
        status.textContent = 'Live';
        status.className = 'live on';
      };
      const deliver = (message) => {
        let event = null;
        try { event = JSON.parse(message.data); } catch (_) { return; }
        for (const f of listeners) f(event);
        scheduleRefresh();
      };
      for (const type of EVENT_TYPES) source.addEventListener(type, deliver);
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          if (wasOpen) {
            // The control plane went away (a restart): come back when it does.
            status.textContent = 'Reconnecting…';
            status.className = 'live off';
            setTimeout(connect, delay);
            delay = Math.min(delay * 2, 30000);
          } else {
            status.textContent = 'Live updates not available';
            status.className = 'live off';
          }
        } else {
          status.textContent = 'Reconnecting…';
          status.className = 'live off';
        }
      };
    };
    connect();
  }

  let refreshTimer = null;
  let refresh = () => {};
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => refresh(), 250);
  }

  // ------------------------------------------------------------------ pages

  const pages = {};

  pages.dashboard = () => {
    const body = h('div');
    app.replaceChildren(body);
    return async () => {
      const [origins, routes, edges, certs, plan] = await Promise.all([
        api('GET', '/api/v1/origins'), api('GET', '/api/v1/routes'),
        api('GET', '/api/v1/edge-nodes'), optional('/api/v1/certificates'),
        optional('/api/v1/dns/instructions'),
      ]);
      const live = edges.edge_nodes.filter((e) => e.status !== 'deleted');
      const healthy = live.filter((e) => e.health === 'healthy').length;
      const active = origins.origins.filter((o) => o.status === 'active').length;
      const stat = (label, n, detail, href) => h('div', { class: 'stat' },
        h('a', { href }, h('div', { class: 'muted' }, label), h('div', { class: 'n' }, n),
          h('div', { class: 'muted' }, detail)));
      const attention = [];
      for (const e of live) {
        if (e.health === 'unhealthy' || e.health === 'degraded') {
          attention.push(h('li', {}, 'Edge ', h('a', { href: `/ui/edges/${e.id}` }, e.name), ' is ', badge(e.health),
            e.health_check_failures ? ` (${e.health_check_failures} failed checks in a row)` : ''));
        }
        if (e.agent_error) {
          attention.push(h('li', {}, 'Edge ', h('a', { href: `/ui/edges/${e.id}` }, e.name), '\'s agent reports: ', h('code', {}, e.agent_error)));
        }
      }
      for (const o of origins.origins) {
        if (o.status !== 'active') attention.push(h('li', {}, 'Origin ', h('strong', {}, o.name), ' is not connected (last heartbeat ', ago(o.last_heartbeat), ')'));
      }
      if (certs) {
        for (const c of certs.certificates) {
          if (c.status === 'failed' || c.status === 'expired' || (c.days_left !== null && c.days_left !== undefined && c.days_left < 21)) {
            attention.push(h('li', {}, 'Certificate for ', h('strong', {}, c.names.join(', ')), ' is ', badge(c.status),
              c.days_left !== undefined && c.days_left !== null ? ` — ${c.days_left} days left` : ''));
          }
        }
      }
      if (plan) {
        for (const m of plan.manual || []) {
          attention.push(h('li', {}, 'DNS for ', h('strong', {}, m.hostname), ' must be set by hand: ', h('a', { href: '/ui/dns' }, 'instructions')));
        }
      }
      const validCerts = certs ? certs.certificates.filter((c) => c.status === 'valid').length : null;
      replace(body,
        h('div', { class: 'grid' },
          stat('Origins', origins.origins.length, `${active} connected`, '/ui/origins'),
          stat('Routes', routes.routes.length, 'host names published', '/ui/routes'),
          stat('Edge nodes', live.length, `${healthy} healthy`, '/ui/edges'),
          stat('Certificates', certs ? certs.certificates.length : '—', certs ? `${validCerts} valid` : 'not available', '/ui/certificates')),
        section('Needs attention', attention.length ? h('ul', { class: 'attention' }, attention)
          : h('p', { class: 'muted' }, 'Nothing needs attention.')),
        section('Edge nodes', table(['Name', 'Region', 'Public IP', 'Status', 'Health', 'Last heartbeat'],
          live.map((e) => [h('a', { href: `/ui/edges/${e.id}` }, e.name), `${e.provider} ${e.region}`,
            e.public_ip || '—', badge(e.status), badge(e.health), ago(e.last_heartbeat)]), 'No edge nodes yet.')),
        section('Origins', table(['Name', 'Status', 'Edges', 'Last heartbeat'],
          origins.origins.map((o) => [o.name, badge(o.status), o.edge_nodes_count, ago(o.last_heartbeat)]), 'No origins yet.')));
    };
  };

  pages.origins = () => {
    const list = h('div');
    const services = h('div', { class: 'stack' });
    let rows = 0;
    const addService = () => {
      const i = rows++;
      const row = h('div', { class: 'inline service' },
        field('Service name', `services[${i}].name`, h('input', { placeholder: 'web', required: true })),
        field('Port', `services[${i}].port`, h('input', { type: 'number', min: 1, max: 65535, placeholder: '8080', required: true })),
        field('Protocol', `services[${i}].protocol`, select([['http', 'http'], ['https', 'https'], ['tcp', 'tcp']], 'http')));
      services.append(row);
    };
    addService();
    const form = admin && apiForm({ 'aria-label': 'New origin' }, [
      field('Name', 'name', h('input', { placeholder: 'home-server', required: true, autocomplete: 'off' })),
      field('Main domain (optional)', 'domain', h('input', { placeholder: 'app.example.com' })),
      h('fieldset', {}, h('legend', {}, 'Services'), services,
        h('button', { type: 'button', class: 'secondary', onclick: addService }, 'Add a service')),
    ], 'Create origin', async (f) => {
      const list = [];
      for (let i = 0; i < rows; i++) {
        const name = value(f, `services[${i}].name`);
        if (!name) continue;
        list.push({ name, port: numberOr(value(f, `services[${i}].port`)), protocol: value(f, `services[${i}].protocol`) });
      }
      const created = await api('POST', '/api/v1/origins', { name: value(f, 'name'), domain: value(f, 'domain') || undefined, services: list });
      f.reset();
      created_notice.replaceChildren(h('p', { class: 'notice', role: 'status' }, 'Origin ', h('strong', {}, created.name),
        ` created (${created.wireguard_ip}). `, h('a', { href: created.config_download_url, download: 'origin-config.tar.gz' }, 'Download its configuration bundle'),
        ', copy it to the origin and run install-origin.sh.'));
      refresh();
    });
    const created_notice = h('div');
    app.replaceChildren(h('section', { class: 'panel', 'aria-label': 'Origins' }, list),
      form ? section('New origin', created_notice, form) : null);
    return async () => {
      const origins = (await api('GET', '/api/v1/origins')).origins;
      replace(list, table(['Name', 'Status', 'Last heartbeat', 'Edges', 'Services', 'Network', ''],
        origins.map((o) => [
          h('span', {}, h('strong', {}, o.name), o.domain ? h('div', { class: 'muted' }, o.domain) : null),
          h('span', {}, badge(o.status), o.firewall ? h('div', { class: 'muted', title: o.firewall },
            'firewall ', h('span', { class: `badge ${o.firewall === 'on' ? 'ok' : 'bad'}` }, o.firewall.split(':')[0])) : null),
          ago(o.last_heartbeat), o.edge_nodes_count,
          o.services.length ? o.services.map((s) => h('div', {}, `${s.name} :${s.port} ${s.protocol} `,
            !o.last_heartbeat ? null : o.services_down.includes(s.name) ? h('span', { class: 'badge bad' }, 'down') : h('span', { class: 'badge ok' }, 'up')))
            : h('span', { class: 'muted' }, 'none'),
          h('span', { class: 'mono' }, o.network_cidr),
          h('span', {}, admin ? h('a', { class: 'button secondary', href: o.config_download_url, download: 'origin-config.tar.gz' }, 'Download config') : null, ' ',
            admin && o.wireguard_public_key ? rotateButton(`/api/v1/origins/${encodeURIComponent(o.id)}/rotate-keys`, `origin ${o.name}`) : null, ' ',
            admin ? confirmButton('Delete', `Delete origin ${o.name}? Its routes go too.`, async () => {
              await api('DELETE', `/api/v1/origins/${encodeURIComponent(o.id)}?force=true`);
              refresh();
            }) : null),
        ]), 'No origins yet.'));
    };
  };

  // The certificate and DNS state of each host name, from the endpoints that exist. (Not
  // the DNS plan: it is a dry run that asks every provider, too costly for every redraw.)
  async function hostnameStatus() {
    const [certs, manual, records] = await Promise.all([
      optional('/api/v1/certificates'), optional('/api/v1/dns/instructions'), optional('/api/v1/dns/records')]);
    const cert = (hostname) => {
      if (!certs) return h('span', { class: 'muted' }, 'n/a');
      const c = certs.certificates.find((x) => x.names.includes(hostname) ||
        x.names.some((n) => n.startsWith('*.') && hostname.endsWith(n.slice(1)) && hostname.split('.').length === n.split('.').length));
      return c ? h('span', {}, badge(c.status), c.days_left !== undefined && c.days_left !== null ? ` ${c.days_left} d` : '') : badge('none');
    };
    const dns = (hostname) => {
      if (!manual && !records) return h('span', { class: 'muted' }, 'n/a');
      if (manual && (manual.manual || []).some((m) => m.hostname === hostname)) {
        return h('a', { href: '/ui/dns', class: 'badge warn' }, 'set by hand');
      }
      const n = records ? (records.records || []).filter((r) => r.hostname === hostname).length : 0;
      return n ? h('span', { class: 'badge ok' }, `${n} record${n > 1 ? 's' : ''}`) : badge('none');
    };
    return { cert, dns };
  }

  const CERT_MODES = [['http-01', 'ACME HTTP-01'], ['dns-01', 'ACME DNS-01'], ['manual', 'uploaded'], ['none', 'none']];

  pages.routes = () => {
    const list = h('div');
    let origins = [];
    const originSelect = (selected) => select(origins.map((o) => [o.id, o.name]), selected);
    const form = admin && apiForm({ 'aria-label': 'New route' }, [
      field('Host name', 'hostname', h('input', { placeholder: 'app.example.com', required: true, autocomplete: 'off' })),
      field('Origin', 'origin_id', h('select', {})),
      field('Port on the origin', 'target_port', h('input', { type: 'number', min: 1, max: 65535, placeholder: '8080', required: true })),
      field('Certificate', 'certificate', select(CERT_MODES, 'http-01')),
    ], 'Add route', async (f) => {
      const created = await api('POST', '/api/v1/routes', {
        hostname: value(f, 'hostname'), origin_id: value(f, 'origin_id'),
        target_port: numberOr(value(f, 'target_port')), certificate: value(f, 'certificate'),
      });
      route_notice.replaceChildren(...(created.warnings || []).map((w) => h('p', { class: 'notice warning', role: 'status' }, w)));
      f.querySelector('[data-field="hostname"]').value = '';
      f.querySelector('[data-field="target_port"]').value = '';
      refresh();
    });
    const route_notice = h('div');
    app.replaceChildren(h('section', { class: 'panel', 'aria-label': 'Routes' }, list), form ? section('New route', route_notice, form) : null);
    const edit = (row, r) => {
      const editor = apiForm({ 'aria-label': `Edit ${r.hostname}` }, [
        field('Host name', 'hostname', h('input', { value: r.hostname })),
        field('Origin', 'origin_id', originSelect(r.origin_id)),
        field('Port', 'target_port', h('input', { type: 'number', value: r.target_port })),
        field('Certificate', 'certificate', select(CERT_MODES, r.certificate)),
      ], 'Save', async (f) => {
        await api('PUT', `/api/v1/routes/${encodeURIComponent(r.id)}`, {
          hostname: value(f, 'hostname'), origin_id: value(f, 'origin_id'),
          target_port: numberOr(value(f, 'target_port')), certificate: value(f, 'certificate'),
        });
        refresh();
      });
      editor.append(h('button', { type: 'button', class: 'secondary', onclick: () => refresh() }, 'Cancel'));
      const cell = h('td', { colspan: 7 }, editor);
      row.replaceChildren(cell);
      editor.querySelector('input').focus();
    };
    return async () => {
      const [routesAnswer, originsAnswer, status] = await Promise.all([
        api('GET', '/api/v1/routes'), api('GET', '/api/v1/origins'), hostnameStatus()]);
      origins = originsAnswer.origins;
      if (form) {
        const s = form.querySelector('[data-field="origin_id"]');
        const keep = s.value;
        replace(s, origins.map((o) => h('option', { value: o.id, selected: o.id === keep }, o.name)));
      }
      const name = (id) => (origins.find((o) => o.id === id) || { name: id }).name;
      const t = table(['Host name', 'Origin', 'Port', 'Certificate mode', 'Certificate', 'DNS', ''],
        routesAnswer.routes.map((r) => [
          h('span', {}, h('a', { href: `/ui/routes/${r.id}` }, r.hostname), ' ',
            h('a', { href: `https://${r.hostname}/`, rel: 'noreferrer', class: 'muted', title: `Open https://${r.hostname}/` }, '↗')),
          name(r.origin_id), r.target_port,
          r.certificate, status.cert(r.hostname), status.dns(r.hostname),
          admin ? h('span', {}, h('button', { type: 'button', class: 'secondary', 'data-edit': r.id }, 'Edit'), ' ',
            confirmButton('Delete', `Delete the route of ${r.hostname}?`, async () => {
              await api('DELETE', `/api/v1/routes/${encodeURIComponent(r.id)}`);
              refresh();
            })) : '',
        ]), 'No routes yet.');
      replace(list, t);
      list.querySelectorAll('[data-edit]').forEach((b) => b.addEventListener('click', () => {
        const r = routesAnswer.routes.find((x) => x.id === b.dataset.edit);
        edit(b.closest('tr'), r);
      }));
    };
  };

  // What the automation has done with edge `id`, drawn again whenever an event about it
  // arrives: its phase, each step with its time, and the last error. `planned`, for a
  // deletion, are the safe-order steps, ticked off as the phase moves on.
  const DELETION_PHASES = [['draining', 'destroying', 'destroyed'], ['destroying', 'destroyed'], ['destroyed']];
  function progress(title, id, planned) {
    const body = h('div', { 'aria-live': 'polite' });
    const box = h('div', { class: 'notice', role: 'status', 'data-progress': id }, h('strong', {}, title), body);
    const draw = async () => {
      let edge;
      try { edge = await api('GET', `/api/v1/edge-nodes/${encodeURIComponent(id)}`); } catch (_) { return; }
      const life = edge.lifecycle || {};
      const steps = Object.entries(life.steps || {}).sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
      replace(body,
        h('p', {}, 'Status ', badge(edge.status), life.phase ? [' · phase ', h('code', {}, life.phase)] : null),
        planned ? h('ol', { class: 'steps' }, planned.map((step, i) =>
          h('li', { class: (DELETION_PHASES[i] || []).includes(life.phase) ? 'done' : null }, step))) : null,
        steps.length ? h('ul', { class: 'steps' }, steps.map(([step, at]) =>
          h('li', { class: 'done' }, `${step.replace(/_/g, ' ')} `, ago(at)))) : (planned ? null : h('p', { class: 'muted' }, 'Waiting for the first step…')),
        life.last_error ? h('p', { class: 'error' }, life.last_error) : null);
    };
    onEvent((event) => { if (event.subject === id) draw(); });
    draw();
    return box;
  }

  pages.edges = () => {
    const list = h('div');
    const notices = h('div');
    const providerInput = h('input', { placeholder: 'manual', value: 'manual', list: 'providers' });
    const form = admin && apiForm({ 'aria-label': 'New edge node' }, [
      field('Provider', 'provider', providerInput),
      h('datalist', { id: 'providers' }, ['manual', 'digitalocean', 'vultr', 'hetzner', 'aws'].map((p) => h('option', { value: p }))),
      field('Region', 'region', h('input', { placeholder: 'sgp1', required: true })),
      field('Public IP (manual)', 'public_ip', h('input', { placeholder: '203.0.113.10' })),
      field('Size (provider)', 'size', h('input', { placeholder: 's-1vcpu-1gb' })),
      field('Name (optional)', 'name', h('input', { placeholder: 'edge-sgp1-01' })),
      field('On this machine (loopback URL)', 'allow_loopback_url', h('input', { type: 'checkbox' })),
    ], 'Add edge node', async (f) => {
      const created = await api('POST', '/api/v1/edge-nodes', {
        provider: value(f, 'provider') || 'manual', region: value(f, 'region'),
        public_ip: value(f, 'public_ip') || undefined, size: value(f, 'size') || undefined,
        name: value(f, 'name') || undefined,
        allow_loopback_url: f.querySelector('[data-field="allow_loopback_url"]').checked,
      });
      for (const w of created.warnings || []) notices.prepend(h('p', { class: 'notice warning', role: 'status' }, w));
      if (created.enroll_command) {
        notices.prepend(h('div', { class: 'notice', role: 'status' },
          h('p', {}, 'Run this on the new server (the token works once, for a day; it is shown only now):'),
          h('code', { class: 'enroll-command' }, created.enroll_command)));
      } else {
        notices.prepend(progress(`Provisioning ${created.id}`, created.id, null));
      }
      refresh();
    });
    app.replaceChildren(notices, h('section', { class: 'panel', 'aria-label': 'Edge nodes' }, list), form ? section('New edge node', form) : null);
    return async () => {
      const edges = (await api('GET', '/api/v1/edge-nodes')).edge_nodes;
      replace(list, table(['Name', 'Provider', 'Region', 'Public IP', 'Status', 'Health', 'Phase', 'Uptime', 'Last heartbeat', ''],
        edges.map((e) => [
          h('a', { href: `/ui/edges/${e.id}` }, e.name), e.provider, e.region, e.public_ip || '—',
          h('span', { 'data-edge-status': e.id }, badge(e.status)), h('span', { 'data-edge-health': e.id }, badge(e.health)),
          e.lifecycle && e.lifecycle.phase ? h('code', {}, e.lifecycle.phase) : '—',
          duration(e.uptime_seconds), ago(e.last_heartbeat),
          admin && e.status !== 'deleted' ? confirmButton('Delete', `Delete edge ${e.name}? It is removed from DNS first, then destroyed.`, async () => {
            const answer = await api('DELETE', `/api/v1/edge-nodes/${encodeURIComponent(e.id)}`);
            notices.prepend(progress(`Deleting ${e.name}`, e.id, answer.steps));
            refresh();
          }) : '',
        ]), 'No edge nodes yet.'));
    };
  };

  function chart(checks) {
    const ns = 'http://www.w3.org/2000/svg';
    const s = (tag, attrs) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      return n;
    };
    const width = 800, height = 220, pad = 36;
    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Response time and failures over time' });
    const points = checks.slice().reverse();
    if (!points.length) return h('p', { class: 'muted' }, 'No health checks recorded yet.');
    const t0 = Date.parse(points[0].timestamp), t1 = Math.max(Date.parse(points[points.length - 1].timestamp), t0 + 1);
    const maxMs = Math.max(10, ...points.map((p) => p.response_time_ms || 0));
    const x = (t) => pad + ((Date.parse(t) - t0) / (t1 - t0)) * (width - 2 * pad);
    const y = (ms) => height - pad - (ms / maxMs) * (height - 2 * pad);
    svg.append(s('line', { class: 'axis', x1: pad, y1: height - pad, x2: width - pad, y2: height - pad }),
      s('line', { class: 'axis', x1: pad, y1: pad, x2: pad, y2: height - pad }));
    const label = (text, lx, ly, anchor) => { const t = s('text', { x: lx, y: ly, 'text-anchor': anchor || 'start' }); t.textContent = text; svg.append(t); };
    label(`${maxMs} ms`, 4, pad - 6);
    label('0', pad - 6, height - pad + 4, 'end');
    label(new Date(t0).toLocaleTimeString(), pad, height - 10);
    label(new Date(t1).toLocaleTimeString(), width - pad, height - 10, 'end');
    const path = points.filter((p) => p.response_time_ms !== null && p.response_time_ms !== undefined)
      .map((p, i) => `${i ? 'L' : 'M'}${x(p.timestamp).toFixed(1)},${y(p.response_time_ms).toFixed(1)}`).join(' ');
    if (path) svg.append(s('path', { class: 'line', d: path }));
    for (const p of points.filter((q) => q.status === 'failure')) {
      svg.append(s('circle', { class: 'fail', cx: x(p.timestamp).toFixed(1), cy: height - pad, r: 4 }));
    }
    const failures = points.filter((p) => p.status === 'failure').length;
    return h('figure', {}, svg, h('figcaption', { class: 'muted' },
      `${points.length} checks, ${failures} failed (red). Line: response time.`));
  }

  // Requests per bucket as bars (5xx in red), the 95th percentile latency as a line on
  // its own scale, for a `GET …/traffic` answer.
  function trafficChart(series) {
    const ns = 'http://www.w3.org/2000/svg';
    const s = (tag, attrs) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      return n;
    };
    const width = 800, height = 220, pad = 44;
    const buckets = series.buckets;
    if (!series.total.requests) {
      return h('p', { class: 'muted', 'data-traffic-total': '0 0' },
        `No requests counted over the last ${series.range}. Edges report what they serve with their heartbeats.`);
    }
    const svg = s('svg', { class: 'chart traffic', viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-label': 'Requests, errors and 95th percentile latency over time' });
    const maxRequests = Math.max(1, ...buckets.map((b) => b.requests));
    const maxMs = Math.max(1, ...buckets.map((b) => b.p95_ms || 0));
    const slot = (width - 2 * pad) / buckets.length;
    const x = (i) => pad + i * slot;
    const y = (n) => height - pad - (n / maxRequests) * (height - 2 * pad);
    const yMs = (ms) => height - pad - (ms / maxMs) * (height - 2 * pad);
    svg.append(s('line', { class: 'axis', x1: pad, y1: height - pad, x2: width - pad, y2: height - pad }),
      s('line', { class: 'axis', x1: pad, y1: pad, x2: pad, y2: height - pad }));
    const label = (text, lx, ly, anchor, cls) => {
      const t = s('text', { x: lx, y: ly, 'text-anchor': anchor || 'start' });
      if (cls) t.setAttribute('class', cls);
      t.textContent = text;
      svg.append(t);
    };
    const when = (iso) => (series.step_seconds >= 3600 ? new Date(iso).toLocaleDateString() : new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
    label(`${maxRequests} req`, 4, pad - 8);
    label(`${maxMs} ms p95`, width - 4, pad - 8, 'end', 'latency');
    label('0', pad - 6, height - pad + 4, 'end');
    label(when(buckets[0].start), pad, height - 12);
    label(when(buckets[buckets.length - 1].start), width - pad, height - 12, 'end');
    buckets.forEach((b, i) => {
      if (!b.requests) return;
      const w = Math.max(1, slot - 1).toFixed(1);
      const bar = s('rect', { class: 'requests', x: x(i).toFixed(1), y: y(b.requests).toFixed(1), width: w, height: (height - pad - y(b.requests)).toFixed(1) });
      const tip = s('title', {});
      tip.textContent = `${when(b.start)}: ${b.requests} requests, ${b.errors} errors${b.p95_ms !== null ? `, p95 ${b.p95_ms} ms` : ''}`;
      bar.append(tip);
      svg.append(bar);
      if (b.errors) svg.append(s('rect', { class: 'errors', x: x(i).toFixed(1), y: y(b.errors).toFixed(1), width: w, height: (height - pad - y(b.errors)).toFixed(1) }));
    });
    const path = buckets.map((b, i) => (b.p95_ms === null ? null : [x(i) + slot / 2, yMs(b.p95_ms)]))
      .filter(Boolean).map(([px, py], i) => `${i ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`).join(' ');
    if (path) svg.append(s('path', { class: 'line', d: path }));
    const t = series.total;
    const share = t.requests ? ` (${((100 * t.errors) / t.requests).toFixed(1)} %)` : '';
    return h('figure', {}, svg, h('figcaption', { class: 'muted', 'data-traffic-total': `${t.requests} ${t.errors}` },
      `${t.requests} requests, ${t.errors} errors${share} (red)`, t.p95_ms !== null ? `, p95 ${t.p95_ms} ms (line)` : '', ` over the last ${series.range}.`));
  }

  // A traffic chart of `path` (…/traffic) with a range choice, fetched again every 10 s
  // while it is on the page.
  function trafficSection(path) {
    const body = h('div', { 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
    const range = select([['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['30d', 'Last 30 days']], '1h');
    range.setAttribute('aria-label', 'Range');
    const draw = async () => {
      try {
        replace(body, trafficChart(await api('GET', `${path}?range=${range.value}`)));
      } catch (e) {
        if (e.status === 404) replace(body, notAvailable('Traffic analytics'));
        else replace(body, failure(e));
      }
    };
    range.addEventListener('change', draw);
    const box = h('div', { class: 'traffic-section' }, h('p', {}, range), body);
    const timer = setInterval(() => { if (box.isConnected) draw(); else clearInterval(timer); }, 10000);
    draw();
    return box;
  }

  pages.route = () => {
    const body = h('div');
    const traffic = trafficSection(`/api/v1/routes/${encodeURIComponent(pageId)}/traffic`);
    app.replaceChildren(body, section('Traffic', traffic));
    return async () => {
      const r = await api('GET', `/api/v1/routes/${encodeURIComponent(pageId)}`);
      const origin = await api('GET', `/api/v1/origins/${encodeURIComponent(r.origin_id)}`).catch(() => ({ name: r.origin_id }));
      document.getElementById('title').textContent = `Route ${r.hostname}`;
      replace(body, section('Route', table(['Host name', 'Origin', 'Port', 'Certificate mode'],
        [[h('a', { href: `https://${r.hostname}/`, rel: 'noreferrer' }, r.hostname), origin.name, r.target_port, r.certificate]], '')));
    };
  };

  pages.edge = () => {
    const body = h('div');
    const traffic = trafficSection(`/api/v1/edge-nodes/${encodeURIComponent(pageId)}/traffic`);
    app.replaceChildren(body);
    return async () => {
      const id = encodeURIComponent(pageId);
      const [edge, history] = await Promise.all([api('GET', `/api/v1/edge-nodes/${id}`),
        api('GET', `/api/v1/edge-nodes/${id}/health-history?limit=300`)]);
      document.getElementById('title').textContent = `Edge node ${edge.name}`;
      const life = edge.lifecycle;
      replace(body,
        section('Status', table(['Provider', 'Region', 'Public IP', 'Status', 'Health', 'Uptime', 'Last heartbeat', 'Phase'],
          [[edge.provider, edge.region, edge.public_ip || '—', badge(edge.status), badge(edge.health),
            duration(edge.uptime_seconds), ago(edge.last_heartbeat),
            life && life.phase ? h('span', {}, life.phase, life.last_error ? h('div', { class: 'error' }, life.last_error) : null) : '—']], '')),
        section('Health history', chart(history.checks)),
        section('Traffic', traffic),
        section('Tunnels', table(['Origin', 'Address', 'Port', 'Public key'], edge.tunnels.map((t) =>
          [t.origin_id, t.wireguard_ip, t.listen_port, t.public_key ? h('code', {}, t.public_key) : 'not enrolled yet']), 'No tunnels.'),
          admin && edge.wireguard_public_key ? rotateButton(`/api/v1/edge-nodes/${id}/rotate-keys`, `edge ${edge.name}`) : null),
        section('Latest checks', table(['Time', 'Result', 'Response time', 'Error'], history.checks.slice(0, 20).map((c) =>
          [ago(c.timestamp), badge(c.status), c.response_time_ms !== null && c.response_time_ms !== undefined ? `${c.response_time_ms} ms` : '—', c.error_message || '']), 'No checks yet.')));
    };
  };

  pages.certificates = () => {
    const list = h('div');
    const form = admin && apiForm({ 'aria-label': 'Upload a certificate', class: 'stack' }, [
      field('Certificate chain (PEM)', 'certificate_pem', h('textarea', { rows: 5, class: 'mono' })),
      field('Private key (PEM)', 'private_key_pem', h('textarea', { rows: 5, class: 'mono', autocomplete: 'off' })),
    ], 'Upload', async (f) => {
      await api('POST', '/api/v1/certificates', { certificate_pem: value(f, 'certificate_pem'), private_key_pem: value(f, 'private_key_pem') });
      f.reset();
      refresh();
    });
    app.replaceChildren(h('section', { class: 'panel', 'aria-label': 'Certificates' }, list), form ? section('Upload a certificate', form) : null);
    return async () => {
      const certs = await optional('/api/v1/certificates');
      if (!certs) { replace(list, notAvailable('Certificate management')); if (form) form.hidden = true; return; }
      const when = (t) => (t ? h('time', { datetime: t, title: t }, new Date(t).toLocaleDateString()) : '—');
      replace(list, table(['Names', 'Source', 'Issuer', 'Expires', 'Days left', 'Next renewal', 'Status', ''],
        certs.certificates.map((c) => [c.names.join(', '), c.method && c.method !== c.source ? `${c.source} (${c.method})` : c.source, c.issuer || '—',
          when(c.not_after), c.days_left !== undefined && c.days_left !== null ? c.days_left : '—', when(c.next_renewal),
          h('span', {}, badge(c.status), c.last_error ? h('div', { class: 'error' }, c.last_error) : null),
          admin && c.source !== 'manual' ? h('button', {
            type: 'button', class: 'secondary',
            onclick: async () => { try { await api('POST', `/api/v1/certificates/${encodeURIComponent(c.id)}/renew`); } catch (e) { window.alert(e.message); } refresh(); },
          }, 'Renew now') : '']), 'No certificates yet.'));
    };
  };

  pages.dns = () => {
    const zones = h('div'), plan = h('div'), records = h('div');
    const form = admin && apiForm({ 'aria-label': 'New DNS zone' }, [
      field('Zone', 'name', h('input', { placeholder: 'example.com', required: true })),
      field('Provider', 'provider', select([['cloudflare', 'Cloudflare'], ['route53', 'Route 53'], ['gcloud', 'Google Cloud DNS'], ['powerdns', 'PowerDNS'], ['manual', 'Manual']], 'cloudflare')),
      field('TTL', 'ttl', h('input', { type: 'number', value: 30, min: 1 })),
      field('Settings (JSON)', 'settings', h('input', { placeholder: '{"zone_id":"…"}' })),
      field('Credentials (JSON, stored sealed)', 'credentials', h('input', { type: 'password', autocomplete: 'off', placeholder: '{"api_token":"…"}' })),
    ], 'Add zone', async (f) => {
      const parse = (name) => {
        const text = value(f, name);
        if (!text) return {};
        try { return JSON.parse(text); } catch (_) { throw Object.assign(new Error(`${name} is not valid JSON`), { field: name }); }
      };
      await api('POST', '/api/v1/dns/zones', { name: value(f, 'name'), provider: value(f, 'provider'), ttl: numberOr(value(f, 'ttl')), settings: parse('settings'), credentials: parse('credentials') });
      f.reset();
      refresh();
    });
    const reconcile = admin && h('button', { type: 'button', class: 'secondary', onclick: async () => { await api('POST', '/api/v1/dns/reconcile'); refresh(); } }, 'Apply the plan now');
    app.replaceChildren(section('Zones', zones, form), section('Plan', reconcile, plan), section('Records', records));
    return async () => {
      const [z, p, r] = await Promise.all([optional('/api/v1/dns/zones'), optional('/api/v1/dns/plan'), optional('/api/v1/dns/records')]);
      if (form) form.hidden = !z;
      if (reconcile) reconcile.hidden = !p;
      replace(zones, z ? table(['Zone', 'Provider', 'TTL', 'Credentials', ''], (z.zones || []).map((zone) => [zone.name, zone.provider, `${zone.ttl} s`,
        zone.has_credentials ? 'stored (sealed)' : 'none',
        admin ? confirmButton('Delete', `Delete zone ${zone.name}?`, async () => { await api('DELETE', `/api/v1/dns/zones/${encodeURIComponent(zone.id)}`); refresh(); }) : '']),
      'No zones: every host name is set by hand.') : notAvailable('DNS zone management'));
      if (!p) replace(plan, notAvailable('The DNS plan'));
      else {
        const changes = [];
        const problems = [];
        for (const zone of p.zones || []) {
          for (const c of zone.changes || []) changes.push([c.action, zone.zone, h('code', {}, c.record), c.reason]);
          if (zone.error) problems.push(h('p', { class: 'notice bad' }, `${zone.zone} (${zone.provider}): ${zone.error}`));
          for (const f of zone.failed || []) problems.push(h('p', { class: 'notice bad' }, `${zone.zone}: ${f}`));
        }
        replace(plan, problems, table(['Action', 'Zone', 'Record', 'Why'], changes, 'The managed zones are up to date.'),
          (p.manual || []).length ? h('div', {}, h('h3', {}, 'Set these records by hand'),
            h('p', { class: 'muted' }, 'These host names are outside every managed zone: create the records at their DNS provider.'),
            (p.manual || []).map((m) => h('div', { class: 'notice' }, h('strong', {}, m.hostname),
              (m.records || []).length ? h('ul', {}, m.records.map((rec) => h('li', {}, h('code', {}, rec))))
                : h('p', { class: 'muted' }, 'No edge serves it yet, so there is nothing to point it at.')))) : null);
      }
      replace(records, r ? table(['Host name', 'Type', 'Value', 'Zone', 'Provider'], (r.records || []).map((rec) =>
        [rec.hostname, rec.type, h('code', {}, rec.value), rec.zone || '—', rec.provider]), 'No records.') : notAvailable('The DNS record list'));
    };
  };

  pages.events = () => {
    const list = h('div');
    const params = new URLSearchParams(location.search);
    const filter = h('form', { class: 'inline', 'aria-label': 'Filter events' },
      field('Type (edge.* for a prefix)', 'type', h('input', { value: params.get('type') || '' })),
      field('Severity', 'severity', select([['', 'any'], ['info', 'info'], ['warning', 'warning'], ['critical', 'critical']], params.get('severity') || '')),
      field('Subject id', 'subject', h('input', { value: params.get('subject') || '' })),
      h('button', { type: 'submit' }, 'Filter'));
    filter.addEventListener('submit', (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const k of ['type', 'severity', 'subject']) { const v = value(filter, k); if (v) q.set(k, v); }
      history.replaceState(null, '', `?${q}`);
      refresh();
    });
    app.replaceChildren(section('Filter', filter), h('section', { class: 'panel', 'aria-label': 'Events' }, list));
    return async () => {
      const q = new URLSearchParams(location.search);
      q.set('limit', '100');
      const events = await optional(`/api/v1/events?${q}`);
      if (!events) { replace(list, notAvailable('The event log')); return; }
      replace(list, table(['Time', 'Severity', 'Type', 'Subject', 'Message'], events.events.map((e) =>
        [ago(e.created_at), badge(e.severity), h('code', {}, e.type), e.subject || '—', e.message]), 'No events match.'));
    };
  };

  pages.modules = () => {
    const list = h('div');
    app.replaceChildren(h('section', { class: 'panel', 'aria-label': 'Modules' }, list));
    return async () => {
      const modules = await optional('/api/v1/modules');
      if (!modules) { replace(list, notAvailable('Module settings')); return; }
      replace(list, table(['Module', 'Enabled', 'Provider', 'Connection', 'Detail', 'Counts'], modules.modules.map((m) => [
        h('strong', {}, m.name.replace(/_/g, ' ')),
        h('label', {}, h('input', {
          type: 'checkbox', checked: m.enabled, disabled: !admin || m.available === false, 'aria-label': `${m.name} enabled`,
          onchange: async (e) => {
            e.target.disabled = true;
            try { await api('PUT', `/api/v1/modules/${encodeURIComponent(m.name)}`, { enabled: e.target.checked }); } catch (err) { window.alert(err.message); }
            refresh();
          },
        }), m.enabled ? ' on' : ' off'),
        m.provider || '—', m.connected === undefined || m.connected === null ? badge(null) : badge(m.connected ? 'connected' : 'failed'),
        m.detail || '', Object.entries(m.counts || {}).map(([k, v]) => h('div', {}, `${k.replace(/_/g, ' ')}: ${v}`)),
      ]), 'No modules.'));
    };
  };

  pages.users = () => {
    const users = h('div'), tokens = h('div'), secret = h('div');
    const userForm = admin && apiForm({ 'aria-label': 'New user' }, [
      field('E-mail address', 'email', h('input', { type: 'email', required: true, autocomplete: 'off' })),
      field('Role', 'role', select([['viewer', 'viewer (read only)'], ['admin', 'admin']], 'viewer')),
      field('Password (12+ characters)', 'password', h('input', { type: 'password', autocomplete: 'new-password' })),
    ], 'Add user', async (f) => {
      await api('POST', '/api/v1/users', { email: value(f, 'email'), role: value(f, 'role'), password: value(f, 'password') || undefined });
      f.reset();
      refresh();
    });
    const tokenForm = admin && apiForm({ 'aria-label': 'New API token' }, [
      field('Name', 'name', h('input', { placeholder: 'ci', required: true })),
      field('Role', 'role', select([['viewer', 'viewer (read only)'], ['admin', 'admin']], 'viewer')),
    ], 'Create token', async (f) => {
      const created = await api('POST', '/api/v1/tokens', { name: value(f, 'name'), role: value(f, 'role') });
      f.reset();
      secret.replaceChildren(h('div', { class: 'notice', role: 'status' },
        h('p', {}, `Token ${created.name} (shown only now; copy it):`), h('code', { class: 'new-token' }, created.token)));
      refresh();
    });
    app.replaceChildren(section('Users', users, userForm), section('API tokens', secret, tokens, tokenForm));
    return async () => {
      const [u, t] = await Promise.all([api('GET', '/api/v1/users'), api('GET', '/api/v1/tokens')]);
      replace(users, table(['E-mail address', 'Role', 'Second factor', 'Locked', 'Created', ''], u.users.map((user) => [
        user.email,
        admin ? h('select', {
          'aria-label': `Role of ${user.email}`,
          onchange: async (e) => { try { await api('PUT', `/api/v1/users/${encodeURIComponent(user.id)}`, { role: e.target.value }); } catch (err) { window.alert(err.message); } refresh(); },
        }, ['admin', 'viewer'].map((r) => h('option', { value: r, selected: r === user.role }, r))) : user.role,
        user.totp_enabled ? badge('active') : h('span', { class: 'badge warn' }, 'not set up'),
        user.locked_until && Date.parse(user.locked_until) > Date.now() ? h('span', { class: 'badge bad' }, `until ${new Date(user.locked_until).toLocaleTimeString()}`) : '—',
        ago(user.created_at),
        admin ? h('span', {},
          h('button', { type: 'button', class: 'secondary', onclick: async () => { if (window.confirm(`Reset the second factor of ${user.email}? They set it up again at their next sign-in.`)) { await api('POST', `/api/v1/users/${encodeURIComponent(user.id)}/reset-totp`); refresh(); } } }, 'Reset 2FA'), ' ',
          confirmButton('Delete', `Delete user ${user.email}?`, async () => { await api('DELETE', `/api/v1/users/${encodeURIComponent(user.id)}`); refresh(); })) : '',
      ]), 'No users.'));
      replace(tokens, table(['Name', 'Role', 'Created', ''], t.tokens.map((token) => [token.name, token.role, ago(token.created_at),
        admin ? confirmButton('Revoke', `Revoke token ${token.name}? Programs using it stop working.`, async () => { await api('DELETE', `/api/v1/tokens/${encodeURIComponent(token.id)}`); refresh(); }) : '']), 'No API tokens.'));
    };
  };

  // ------------------------------------------------------------------ start

  const setup = pages[page];
  if (!setup) return;
  const draw = setup();
  let running = null;
  refresh = async () => {
    if (running) { scheduleRefresh(); return; }
    running = (async () => {
      try {
        await draw();
      } catch (e) {
        if (e.status !== 401) app.prepend(failure(e));
      } finally {
        running = null;
      }
    })();
    await running;
  };
  refresh().then(() => app.setAttribute('data-ready', 'true'));
  connectLive();
})();
