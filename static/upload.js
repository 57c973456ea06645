// airlock provider upload page (/upload#TOKEN). Needs, loaded before it with <script defer>:
// hash-wasm's sha256.umd.min.js (global `hashwasm`) and tus-js-client's tus.min.js (`tus`).
// Each file is hashed (SHA-256) in the browser, then sent with tus, resumably; the server's
// digest (Repr-Digest) is shown beside ours; Seal ends the upload link.
(function () {
  'use strict';

  const TOKEN_KEY = 'airlock-upload-token';
  const CHUNK = 8 * 1024 * 1024; // hashing slices and tus PATCH size
  const PARALLEL = 2; // uploads at a time
  const $ = (id) => document.getElementById(id);

  // ---- token ---------------------------------------------------------------------------
  function takeToken(key) {
    let token = location.hash.replace(/^#/, '');
    try {
      if (token) sessionStorage.setItem(key, token);
      else token = sessionStorage.getItem(key) || '';
    } catch (_) { /* storage disabled: keep the token in memory only */ }
    if (location.hash) history.replaceState(null, '', location.pathname);
    return token;
  }

  function jwtClaims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const bin = atob(part + '==='.slice((part.length + 3) % 4));
      return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    } catch (_) {
      return null;
    }
  }

  // ---- formatting ----------------------------------------------------------------------
  function fmtBytes(n) {
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  }

  function fmtDuration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }

  function rateText(rate, remaining) {
    if (!rate) return '';
    return fmtBytes(rate) + '/s, ' + fmtDuration(remaining / rate) + ' left';
  }

  // Bytes per second over the last few seconds (a sliding-window moving average).
  class Meter {
    constructor() { this.samples = []; this.count = 0; }
    add(bytes) {
      this.count += bytes;
      this.samples.push([performance.now(), this.count]);
    }
    rate() {
      const now = performance.now();
      const s = this.samples;
      while (s.length > 2 && now - s[1][0] > 8000) s.shift();
      if (s.length < 2) return 0;
      const span = (now - s[0][0]) / 1000;
      return span > 0.5 ? (this.count - s[0][1]) / span : 0;
    }
  }

  function base64ToHex(b64) {
    return Array.from(atob(b64), (c) => c.charCodeAt(0).toString(16).padStart(2, '0')).join('');
  }

  // The server's message from a JSON error body {"error": "..."}, else the text or status.
  function serverMessage(body, status) {
    try {
      const j = JSON.parse(body);
      if (j && typeof j.error === 'string') return j.error;
    } catch (_) { /* not JSON */ }
    const text = String(body || '').trim();
    return text ? text.slice(0, 300) : 'HTTP ' + status;
  }

  // ---- page ----------------------------------------------------------------------------
  const token = takeToken(TOKEN_KEY);
  // A link opened in a tab already on this page changes only the fragment: start afresh.
  window.addEventListener('hashchange', () => {
    if (location.hash.length > 1) {
      takeToken(TOKEN_KEY);
      location.reload();
    }
  });
  const claims = token ? jwtClaims(token) : null;
  const transferId = claims && typeof claims.sub === 'string' ? claims.sub : '';
  const status = $('status');
  const say = (text, cls) => {
    status.textContent = text;
    status.className = cls || '';
  };

  if (!token || !transferId) {
    $('no-token').hidden = false;
    $('uploader').hidden = true;
    if (token) say('This upload link is malformed. Ask for a new one.', 'error');
    return;
  }
  $('no-token').hidden = true;
  $('uploader').hidden = false;
  if (typeof hashwasm === 'undefined' || typeof tus === 'undefined' || !tus.isSupported) {
    say('This browser cannot run the uploader (its scripts did not load).', 'error');
    return;
  }
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    say('This upload link expired on ' + new Date(claims.exp * 1000).toLocaleString() +
      '. Ask the project manager for a new one.', 'error');
  }

  const auth = 'Bearer ' + token;
  const endpoint = '/api/v1/transfers/' + encodeURIComponent(transferId) + '/tus';
  const fpPrefix = 'airlock:' + transferId + ':';
  const rows = $('file-rows');
  const sealBtn = $('seal');
  const confirmBtn = $('seal-confirm');
  let why = $('seal-why');
  if (!why) {
    why = document.createElement('span');
    why.id = 'seal-why';
    why.className = 'why-disabled';
    sealBtn.after(why);
  }

  const entries = []; // in the order listed
  const byPath = new Map();
  const hashQueue = [];
  const uploadQueue = [];
  let hashing = false;
  let running = 0;
  let halted = false; // the token was refused: start nothing more
  let sealed = false;
  const totalMeter = new Meter();

  function cell(tr, cls, text) {
    const td = document.createElement('td');
    td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function setState(e, text, isError) {
    e.state = text;
    e.el.state.textContent = text;
    e.el.row.classList.toggle('error', !!isError);
    e.el.state.classList.toggle('ok', text === 'match');
    if (!isError) return;
    // A failed or mismatching file blocks Seal until it is added again or removed.
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'remove secondary';
    btn.textContent = 'Remove';
    btn.setAttribute('aria-label', 'Remove ' + e.path + ' from the list and the transfer');
    btn.addEventListener('click', () => removeEntry(e));
    e.el.rate.textContent = '';
    e.el.rate.appendChild(btn);
  }

  function removeEntry(e) {
    entries.splice(entries.indexOf(e), 1);
    if (byPath.get(e.path) === e) byPath.delete(e.path);
    e.el.row.remove();
    if (e.url) {
      // tus termination: the server drops the partial or mismatching upload.
      tus.Upload.terminate(e.url, { headers: { Authorization: auth }, retryDelays: null }).catch(() => {});
    }
    forgetResume('tus::' + fpPrefix + e.path + ':' + e.local + '::');
    say('Removed ' + e.path + ' from the list.');
    $('drop').focus();
    refresh();
  }

  // Column order: Path, Size, Progress, Rate, State, Local SHA-256, Server SHA-256.
  function addFile(file, path) {
    path = path.replace(/^\/+/, '');
    const old = byPath.get(path);
    if (old && !old.el.row.classList.contains('error')) return; // already listed
    const tr = document.createElement('tr');
    tr.dataset.path = path;
    const e = {
      file, path, size: file.size, sent: 0, local: '', server: '', state: '', meter: new Meter(),
      resuming: false, upload: null, el: { row: tr },
    };
    e.el.path = cell(tr, 'path', path);
    e.el.size = cell(tr, 'size num', fmtBytes(file.size));
    e.el.size.title = file.size + ' bytes';
    const barCell = cell(tr, 'progress');
    e.el.bar = document.createElement('progress');
    e.el.bar.className = 'bar';
    e.el.bar.max = file.size || 1;
    e.el.bar.value = 0;
    e.el.bar.setAttribute('aria-label', 'Progress of ' + path);
    barCell.appendChild(e.el.bar);
    e.el.rate = cell(tr, 'rate', '');
    e.el.state = cell(tr, 'state', '');
    e.el.local = cell(tr, 'local-sha256', '');
    e.el.server = cell(tr, 'server-sha256', '');
    if (old) {
      old.el.row.replaceWith(tr);
      entries[entries.indexOf(old)] = e;
    } else {
      rows.appendChild(tr);
      entries.push(e);
    }
    byPath.set(path, e);
    setState(e, 'waiting');
    hashQueue.push(e);
  }

  function addAll(list) {
    if (sealed) return;
    list.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    for (const { file, path } of list) addFile(file, path);
    refresh();
    pumpHash();
  }

  // ---- hashing (one file at a time, 8 MiB slices, never a whole file in memory) ---------
  async function pumpHash() {
    if (hashing) return;
    hashing = true;
    while (hashQueue.length) {
      const e = hashQueue.shift();
      setState(e, 'hashing');
      try {
        const h = await hashwasm.createSHA256();
        h.init();
        for (let off = 0; off < e.size; off += CHUNK) {
          const end = Math.min(off + CHUNK, e.size);
          h.update(new Uint8Array(await e.file.slice(off, end).arrayBuffer()));
          e.el.bar.value = end;
          e.el.rate.textContent = 'hashing ' + Math.floor((100 * end) / e.size) + '%';
        }
        e.local = h.digest('hex');
        e.el.local.textContent = e.local;
        e.el.bar.value = 0;
        e.el.rate.textContent = '';
        setState(e, 'waiting');
        uploadQueue.push(e);
        pumpUpload();
      } catch (err) {
        setState(e, 'error: cannot read or hash the file (' + (err && err.message) + ')', true);
      }
      refresh();
    }
    hashing = false;
  }

  // ---- uploading (tus) -----------------------------------------------------------------
  function pumpUpload() {
    while (!halted && running < PARALLEL && uploadQueue.length) {
      running++;
      startUpload(uploadQueue.shift());
    }
  }

  function finished(e) {
    running--;
    e.upload = null;
    refresh();
    pumpUpload();
  }

  function takeDigest(e, res) {
    const m = /sha-256=:([A-Za-z0-9+/=]+):/i.exec(res.getHeader('Repr-Digest') || '');
    if (!m) return;
    e.server = base64ToHex(m[1]);
    e.el.server.textContent = e.server;
  }

  function settle(e) {
    if (!e.server) setState(e, 'done');
    else if (e.server === e.local) setState(e, 'match');
    else setState(e, 'MISMATCH', true);
  }

  function shouldRetry(err) {
    const res = err.originalResponse;
    if (!res || !res.getStatus()) return true; // network
    const s = res.getStatus();
    if (s >= 500 || s === 423 || s === 429) return true;
    // A PATCH at a stale offset (tus 409): retrying asks the server where to go on.
    return s === 409 && err.originalRequest && err.originalRequest.getMethod() === 'PATCH';
  }

  function startUpload(e) {
    setState(e, 'uploading');
    e.sent = 0;
    let last = -1;
    const fingerprint = fpPrefix + e.path + ':' + e.local;
    const upload = new tus.Upload(e.file, {
      endpoint,
      headers: { Authorization: auth },
      metadata: { relativePath: e.path, filename: e.path, sha256: e.local },
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      // Kept until seal, so a reload after a file finished finds it complete (HEAD) instead of
      // creating it again (which the server refuses as a name collision).
      removeFingerprintOnSuccess: false,
      storeFingerprintForResuming: true,
      fingerprint: () => Promise.resolve(fingerprint),
      onShouldRetry: shouldRetry,
      onAfterResponse(req, res) {
        if (e.resuming && req.getMethod() === 'HEAD' && res.getStatus() < 300) {
          e.resuming = false;
          const n = parseInt(res.getHeader('Upload-Offset'), 10) || 0;
          e.sent = n;
          e.resumedFrom = n;
          e.el.bar.value = n;
          e.el.row.dataset.resumedFrom = String(n);
          setState(e, 'resumed from ' + n + ' bytes');
        }
        takeDigest(e, res);
      },
      onProgress(sent) {
        if (last >= 0 && sent > last) {
          e.meter.add(sent - last);
          totalMeter.add(sent - last);
        }
        last = sent;
        e.sent = sent;
        e.el.bar.value = sent;
        e.el.rate.textContent = rateText(e.meter.rate(), e.size - sent);
        refreshTotal();
      },
      onSuccess() {
        e.url = upload.url;
        e.sent = e.size;
        e.el.bar.value = e.el.bar.max;
        e.el.rate.textContent = e.resumedFrom === undefined ? '' : 'resumed from ' + e.resumedFrom + ' bytes';
        settle(e);
        if (e.size === 0 && e.resumedFrom === undefined && upload.url) {
          // tus-js-client stores no resume entry for an empty file; without one, adding it
          // again after a reload would create it again (refused as a name collision).
          upload.options.urlStorage.addUpload(fingerprint, {
            size: 0, metadata: upload.options.metadata, creationTime: String(new Date()), uploadUrl: upload.url,
          }).catch(() => {});
        }
        if (e.server || !upload.url) return finished(e);
        // No digest came with the last response: ask for it (HEAD of a complete upload).
        fetch(upload.url, { method: 'HEAD', headers: { Authorization: auth, 'Tus-Resumable': '1.0.0' } })
          .then((r) => takeDigest(e, { getHeader: (h) => r.headers.get(h) }))
          .catch(() => {})
          .finally(() => { settle(e); finished(e); });
      },
      onError(err) {
        e.url = upload.url;
        const res = err.originalResponse;
        let msg = 'connection lost; add the file again to resume';
        if (res && res.getStatus()) {
          msg = serverMessage(res.getBody(), res.getStatus());
          if (res.getStatus() === 401) {
            halted = true;
            say('The upload link was refused: ' + msg + '. Ask the project manager for a new link.', 'error');
          }
        }
        e.el.rate.textContent = '';
        setState(e, 'error: ' + msg, true);
        finished(e);
      },
    });
    e.upload = upload;
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) {
        e.resuming = true;
        upload.resumeFromPreviousUpload(previous[0]);
      }
      upload.start();
    }, () => upload.start());
  }

  // ---- totals and the Seal button ------------------------------------------------------
  function refreshTotal() {
    let size = 0;
    let sent = 0;
    let done = 0;
    for (const e of entries) {
      size += e.size;
      sent += Math.min(e.sent, e.size);
      if (e.state === 'match' || e.state === 'done') done++;
    }
    const bar = $('total');
    bar.max = size || 1;
    bar.value = size ? sent : 0;
    const pct = size ? Math.floor((100 * sent) / size) : 0;
    const rate = sent < size ? rateText(totalMeter.rate(), size - sent) : '';
    $('total-text').textContent = done + ' of ' + entries.length + ' files done; ' +
      fmtBytes(sent) + ' of ' + fmtBytes(size) + ' (' + pct + '%)' + (rate ? '; ' + rate : '');
  }

  function sealBlocker() {
    if (sealed) return 'Sealed.';
    if (halted) return 'The upload link was refused.';
    if (!entries.length) return 'Add the files first (again after a reload, to check them).';
    if (entries.some((e) => e.state === 'MISMATCH')) return 'A file arrived with a different digest: remove it, then add it again.';
    if (entries.some((e) => e.state.startsWith('error'))) return 'A file failed; add it again or remove it.';
    if (entries.some((e) => e.state !== 'match')) return 'Waiting for every file to finish and match.';
    return '';
  }

  function refresh() {
    refreshTotal();
    const blocker = sealBlocker();
    sealBtn.disabled = !!blocker;
    why.textContent = sealed ? '' : blocker;
    if (blocker) confirmBtn.hidden = true;
  }

  setInterval(() => {
    if (!running) return;
    for (const e of entries) {
      if (e.upload && e.sent < e.size) e.el.rate.textContent = rateText(e.meter.rate(), e.size - e.sent);
    }
    refreshTotal();
  }, 1000);

  sealBtn.addEventListener('click', () => {
    if (sealBlocker()) return;
    confirmBtn.hidden = false;
    confirmBtn.focus();
  });

  confirmBtn.addEventListener('click', async () => {
    if (sealBlocker()) return;
    sealBtn.disabled = confirmBtn.disabled = true;
    say('Sealing…');
    try {
      const r = await fetch('/api/v1/transfers/' + encodeURIComponent(transferId) + '/seal', {
        method: 'POST',
        headers: { Authorization: auth },
      });
      const body = await r.text();
      if (!r.ok) throw new Error(serverMessage(body, r.status));
      const t = JSON.parse(body);
      sealed = true;
      confirmBtn.hidden = true;
      say('Sealed. Root digest ' + t.root_digest + '. State: ' + t.state +
        (t.state_reason ? ' (' + t.state_reason + ')' : '') + '.', 'ok');
      // The token is dead: drop it and this transfer's tus resume entries.
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
      forgetResume('tus::' + fpPrefix);
      for (const id of ['pick-files', 'pick-folder']) $(id).disabled = true;
      $('drop').setAttribute('aria-disabled', 'true');
    } catch (err) {
      say('Seal failed: ' + err.message, 'error');
    }
    confirmBtn.disabled = false;
    refresh();
  });

  // tus resume entries (localStorage keys `tus::<fingerprint>::<n>`) under a prefix.
  function forgetResume(prefix) {
    try {
      for (let i = localStorage.length - 1; i >= 0; i--) {
        const k = localStorage.key(i);
        if (k && k.startsWith(prefix)) localStorage.removeItem(k);
      }
    } catch (_) { /* storage disabled */ }
  }

  // ---- choosing files: pickers, drop zone (files and whole folders) ---------------------
  const pickFiles = $('pick-files');
  const pickFolder = $('pick-folder');
  function fromInput(input) {
    addAll(Array.from(input.files, (f) => ({ file: f, path: f.webkitRelativePath || f.name })));
    input.value = '';
  }
  pickFiles.addEventListener('change', () => fromInput(pickFiles));
  pickFolder.addEventListener('change', () => fromInput(pickFolder));

  function readAllEntries(reader) {
    return new Promise((resolve, reject) => {
      const out = [];
      const next = () => reader.readEntries((batch) => {
        if (!batch.length) return resolve(out);
        out.push(...batch);
        next();
      }, reject);
      next();
    });
  }

  async function walk(entry, out) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: entry.fullPath.replace(/^\/+/, '') || file.name });
    } else if (entry.isDirectory) {
      for (const child of await readAllEntries(entry.createReader())) await walk(child, out);
    }
  }

  const drop = $('drop');
  drop.addEventListener('click', (ev) => {
    // Controls inside the zone (the pickers, their labels) do their own thing.
    if (!sealed && !ev.target.closest('input, label, button, a')) pickFiles.click();
  });
  drop.addEventListener('keydown', (ev) => {
    if (ev.target !== drop) return;
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      if (!sealed) pickFiles.click();
    }
  });
  drop.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    ev.dataTransfer.dropEffect = sealed ? 'none' : 'copy';
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    // Entries must be taken during the event; reading them may happen later.
    const items = Array.from(ev.dataTransfer.items || []).filter((i) => i.kind === 'file');
    const roots = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    const plain = Array.from(ev.dataTransfer.files || []);
    const out = [];
    try {
      if (roots.length && roots.every(Boolean)) {
        for (const r of roots) await walk(r, out);
      } else {
        for (const f of plain) out.push({ file: f, path: f.name });
      }
    } catch (err) {
      say('Could not read what was dropped: ' + (err && err.message), 'error');
    }
    addAll(out);
  });
  // A drop that misses the zone must not navigate away from the page.
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (ev) => { if (!drop.contains(ev.target)) ev.preventDefault(); });
  }

  refresh();
})();
