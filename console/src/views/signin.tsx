/** Sign-in: an API key or a JWT, checked with GetServerInfo before anything else is shown. */

import { useState } from "preact/hooks";

import { useAuth } from "../auth";

export function SignIn() {
  const { signIn, message } = useAuth();
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const value = token.trim();
    if (!value) return;
    setBusy(true);
    const ok = await signIn({ token: value, project: "" });
    setBusy(false);
    if (ok) setToken("");
  };
  return (
    <div class="signin">
      <form class="card" method="post" onSubmit={submit} autocomplete="off">
        <h1>Agentplane</h1>
        <p class="muted">Sign in with an API key or a JWT. It is kept in this tab only and sent only to this server.</p>
        <label>
          API key or JWT
          <input
            type="password"
            name="credential"
            data-testid="credential"
            value={token}
            autocomplete="off"
            spellcheck={false}
            onInput={(event) => setToken((event.target as HTMLInputElement).value)}
          />
        </label>
        {message && (
          <div class="error" role="alert" data-testid="signin-error">
            {message}
          </div>
        )}
        <button type="submit" class="primary" disabled={busy || !token.trim()}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </div>
  );
}
