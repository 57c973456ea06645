// airlock recipient collection page (/collect#TOKEN): lists the released files, downloads one
// or all (zip) with the token as a bearer header, checks each file's SHA-256 in the browser,
// and shows what remains of the token (expiry, downloads left).
// Hashing uses WebCrypto (no extra script); hash-wasm (global `hashwasm`) is a fallback for
// pages that are not a secure context, if that page loads it and its CSP allows wasm.
(function () {
  'use strict';

  const TOKEN_KEY = 'airlock-collect-token';
  const $ = (id) => document.getElementById(id);

  function takeToken(key) {
    let token = location.hash.replace(/^#/, '');
    try {
      if (token) sessionStorage.setItem(key, token);
      else token = sessionStorage.getItem(key) || '';
    } catch (_) { /* storage disabled: keep the token in memory only */ }
    if (location.hash) history.replaceState(null, '', location.pathname);
    return token;
  }

  function fmtBytes(n) {
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  }

  function fromNow(seconds) {
    if (seconds <= 0) return 'expired';
    const m = Math.round(seconds / 60);
    if (m < 60) return 'in ' + m + (m === 1 ? ' minute' : ' minutes');
    const h = Math.round(seconds / 3600);
    if (h < 48) return 'in ' + h + (h === 1 ? ' hour' : ' hours');
    return 'in ' + Math.round(seconds / 86400) + ' days';
  }

  function serverMessage(body, status) {
    try {
      const j = JSON.parse(body);
      if (j && typeof j.error === 'string') return j.error;
    } catch (_) { /* not JSON */ }
    const text = String(body || '').trim();
    return text ? text.slice(0, 300) : 'HTTP ' + status;
  }

  async function sha256Hex(blob) {
    if (window.isSecureContext && window.crypto && crypto.subtle) {
      const d = new Uint8Array(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
      return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
    }
    if (typeof hashwasm === 'undefined') throw new Error('no SHA-256 in this browser');
    const h = await hashwasm.createSHA256();
    h.init();
    const step = 8 * 1024 * 1024;
    for (let off = 0; off < blob.size; off += step) {
      h.update(new Uint8Array(await blob.slice(off, off + step).arrayBuffer()));
    }
    return h.digest('hex');
  }

  const token = takeToken(TOKEN_KEY);
  // A link opened in a tab already on this page changes only the fragment: start afresh.
  window.addEventListener('hashchange', () => {
    if (location.hash.length > 1) {
      takeToken(TOKEN_KEY);
      location.reload();
    }
  });
  const status = $('status');
  const say = (text, cls) => {
    status.textContent = text;
    status.className = cls || '';
  };
  if (!token) {
    $('no-token').hidden = false;
    $('collection').hidden = true;
    return;
  }
  $('no-token').hidden = true;
  const auth = 'Bearer ' + token;
  let pkg = null;
  let busy = false;

  async function api(path) {
    const r = await fetch(path, { headers: { Authorization: auth }, cache: 'no-store' });
    if (!r.ok) throw new Error(serverMessage(await r.text(), r.status));
    return r;
  }

  function showRemaining(p) {
    $('recipient').textContent = p.recipient;
    const exp = $('expires');
    const at = new Date(p.expires_at * 1000);
    exp.textContent = at.toLocaleString() + ' (' + fromNow(p.expires_at - Date.now() / 1000) + ')';
    if (exp.tagName === 'TIME') exp.dateTime = at.toISOString();
    $('downloads-left').textContent =
      p.downloads_left === null || p.downloads_left === undefined ? 'unlimited' : String(p.downloads_left);
  }

  function cell(tr, cls, text) {
    const td = document.createElement('td');
    td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  // Column order: Path, Size, SHA-256, Download, Check.
  function showFiles(p) {
    const rows = $('collect-rows');
    rows.textContent = '';
    for (const f of p.files) {
      const tr = document.createElement('tr');
      tr.dataset.path = f.path;
      cell(tr, 'path', f.path);
      const size = cell(tr, 'size num', fmtBytes(f.size));
      size.title = f.size + ' bytes';
      cell(tr, 'sha256', f.sha256);
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'download';
      btn.textContent = 'Download';
      btn.setAttribute('aria-label', 'Download ' + f.path);
      btn.addEventListener('click', () => downloadFile(f, tr));
      cell(tr, 'action').appendChild(btn);
      cell(tr, 'check', '');
      rows.appendChild(tr);
    }
    const record = $('record');
    if (record && Array.isArray(p.record)) {
      record.textContent = '';
      for (const name of p.record) {
        const li = document.createElement('li');
        li.textContent = name;
        record.appendChild(li);
      }
    }
  }

  function setBusy(on) {
    busy = on;
    for (const b of document.querySelectorAll('#collect-rows button.download, #download-zip')) {
      b.disabled = on;
    }
  }

  function save(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    a.hidden = true;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // Re-reads the package: downloads left and expiry change with each download.
  async function reload() {
    try {
      pkg = await (await api('/api/v1/collect')).json();
      showRemaining(pkg);
    } catch (err) {
      // The token may just have run out (its last download): say so, keep the list.
      if (pkg && typeof pkg.downloads_left === 'number') $('downloads-left').textContent = '0';
      return ' The link can no longer be used: ' + err.message;
    }
    return '';
  }

  async function download(path, name, what) {
    if (busy) return null;
    setBusy(true);
    say('Downloading ' + what + '…');
    try {
      const blob = await (await api(path)).blob();
      save(blob, name);
      return blob;
    } catch (err) {
      say(what + ' was not downloaded: ' + err.message, 'error');
      return null;
    } finally {
      setBusy(false);
    }
  }

  async function downloadFile(f, tr) {
    const segs = f.path.split('/').map(encodeURIComponent).join('/');
    const base = f.path.split('/').pop();
    const blob = await download('/api/v1/collect/files/' + segs, base, f.path);
    if (!blob) return;
    const check = tr.querySelector('.check');
    let msg;
    try {
      const got = await sha256Hex(blob);
      const ok = got === f.sha256.toLowerCase();
      check.textContent = ok ? 'verified' : 'MISMATCH';
      check.className = 'check ' + (ok ? 'ok' : 'error');
      msg = ok
        ? 'Downloaded ' + f.path + ' (' + fmtBytes(blob.size) + '); its SHA-256 matches.'
        : 'Downloaded ' + f.path + ', but its SHA-256 is ' + got + ', not the one listed. Do not use it.';
    } catch (err) {
      check.textContent = 'not checked';
      msg = 'Downloaded ' + f.path + '; it could not be checked: ' + err.message;
    }
    say(msg + (await reload()), check.textContent === 'MISMATCH' ? 'error' : '');
  }

  $('download-zip').addEventListener('click', async () => {
    if (!pkg) return;
    const name = pkg.id + '.zip';
    const blob = await download('/api/v1/collect/package.zip', name, 'the zip');
    if (!blob) return;
    say('Downloaded ' + name + ' (' + fmtBytes(blob.size) + ').' + (await reload()));
  });

  (async () => {
    say('Loading…');
    try {
      pkg = await (await api('/api/v1/collect')).json();
    } catch (err) {
      say('This collection link cannot be used: ' + err.message, 'error');
      return;
    }
    showRemaining(pkg);
    showFiles(pkg);
    $('collection').hidden = false;
    say('');
    setInterval(() => pkg && showRemaining(pkg), 60000);
  })();
})();
