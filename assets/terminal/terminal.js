// The browser terminal: xterm.js on a WebSocket to the gateway's API, which runs a
// PTY shell through the same path as `ssh` (see src/terminal.rs for the wire).
// The token is sent as the first message, never in the URL, and kept only in this
// tab's sessionStorage so a reconnect does not ask again.
'use strict';
(() => {
  const KEY = 'ssh-gateway-token';
  const sandbox = decodeURIComponent(location.pathname.split('/')[2] || '');
  const $ = (id) => document.getElementById(id);
  $('sandbox').textContent = sandbox;
  $('login-sandbox').textContent = sandbox;
  document.title = sandbox + ' - ssh-gateway terminal';

  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  const encoder = new TextEncoder();
  let ws = null;
  // 'login' (asking for a token), 'open', or 'closed' (Enter reconnects).
  let state = 'login';

  const status = (text) => { $('status').textContent = text; };
  const note = (text) => term.write('\r\n\x1b[2m[' + text + ']\x1b[0m\r\n');

  function askForToken(message) {
    state = 'login';
    sessionStorage.removeItem(KEY);
    $('terminal').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    status('not connected');
    $('token').focus();
  }

  function connect() {
    const token = sessionStorage.getItem(KEY);
    if (!token) return askForToken();
    $('login').hidden = true;
    $('terminal').hidden = false;
    if (!term.element) term.open($('terminal'));
    fit.fit();
    term.focus();
    state = 'open';
    status('connecting…');
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const url = scheme + location.host + '/terminal/' + encodeURIComponent(sandbox) + '/session';
    const socket = new WebSocket(url);
    ws = socket;
    socket.binaryType = 'arraybuffer';
    let ended = false;
    socket.onopen = () => {
      status('connected');
      socket.send(JSON.stringify({ type: 'auth', token, cols: term.cols, rows: term.rows }));
    };
    socket.onmessage = (event) => {
      if (typeof event.data !== 'string') return term.write(new Uint8Array(event.data));
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (msg.type === 'unauthorized') {
        ended = true;
        askForToken(msg.message);
      } else if (msg.type === 'exit') {
        ended = true;
        note(msg.signal ? 'killed by signal ' + msg.signal : 'exited with status ' + msg.status);
      } else if (msg.type === 'closed') {
        ended = true;
        note('connection closed: ' + msg.reason);
      }
    };
    socket.onclose = (event) => {
      if (ws !== socket || state === 'login') return;
      if (!ended) note('connection lost' + (event.reason ? ': ' + event.reason : ''));
      note('press Enter to reconnect');
      state = 'closed';
      status('disconnected');
    };
  }

  term.onData((data) => {
    if (state === 'closed') {
      if (data === '\r') connect();
      return;
    }
    if (state === 'open' && ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onResize(({ cols, rows }) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols, rows }));
  });
  window.addEventListener('resize', () => { if (!$('terminal').hidden) fit.fit(); });
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $('token').value.trim());
    $('token').value = '';
    connect();
  });
  if (sessionStorage.getItem(KEY)) connect(); else askForToken();
})();
