// Signing in: Supabase Auth (supabase-js, vendored, loaded only when configured), or the
// local dev sign-in of the embedded database. Both hand the API an access token.

// Written by scripts/vendor-supabase-js; the version is in the path, so it is cached for good.
export const SUPABASE_JS = "./vendor/supabase-js@2.119.1/supabase.js";

const DEV_SESSION_KEY = "avatar-chat.dev-session";

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`Could not load ${src}.`));
    document.head.append(script);
  });
}

async function readError(response) {
  try {
    const body = await response.json();
    return body?.error?.message || `The server answered ${response.status}.`;
  } catch {
    return `The server answered ${response.status}.`;
  }
}

/** The dev sign-in: a token for any email, kept in localStorage until it expires. */
class DevAuth {
  mode = "dev";

  constructor() {
    this.listeners = [];
  }

  stored() {
    try {
      const session = JSON.parse(localStorage.getItem(DEV_SESSION_KEY) || "null");
      if (session && session.expires_at * 1000 > Date.now() + 30_000) return session;
    } catch {
      // unreadable: as if signed out
    }
    return null;
  }

  async session() {
    const s = this.stored();
    return s ? { token: s.access_token, email: s.user.email } : null;
  }

  async token() {
    return this.stored()?.access_token ?? null;
  }

  async signInDev(email) {
    const response = await fetch("./dev/sign-in", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ email }),
    });
    if (!response.ok) throw new Error(await readError(response));
    localStorage.setItem(DEV_SESSION_KEY, JSON.stringify(await response.json()));
  }

  async signOut() {
    localStorage.removeItem(DEV_SESSION_KEY);
  }
}

/** Supabase Auth through supabase-js: email + password, sign-up, magic link. */
class SupabaseAuth {
  mode = "supabase";

  constructor(client) {
    this.client = client;
  }

  async session() {
    const { data } = await this.client.auth.getSession();
    const s = data.session;
    return s ? { token: s.access_token, email: s.user?.email ?? "" } : null;
  }

  async token() {
    // getSession refreshes an expired access token with the refresh token.
    const { data } = await this.client.auth.getSession();
    return data.session?.access_token ?? null;
  }

  redirectTo() {
    return location.href.split("#")[0];
  }

  async signInWithPassword(email, password) {
    const { error } = await this.client.auth.signInWithPassword({ email, password });
    if (error) throw new Error(error.message);
  }

  /** Resolves true when signed in at once, false when the email must be confirmed first. */
  async signUp(email, password) {
    const { data, error } = await this.client.auth.signUp({
      email,
      password,
      options: { emailRedirectTo: this.redirectTo() },
    });
    if (error) throw new Error(error.message);
    return Boolean(data.session);
  }

  async sendMagicLink(email) {
    const { error } = await this.client.auth.signInWithOtp({
      email,
      options: { emailRedirectTo: this.redirectTo() },
    });
    if (error) throw new Error(error.message);
  }

  onSignedOut(callback) {
    this.client.auth.onAuthStateChange((event) => {
      if (event === "SIGNED_OUT") callback();
    });
  }

  async signOut() {
    await this.client.auth.signOut({ scope: "local" });
  }
}

/** No sign-in configured: says how to configure one. */
class NoAuth {
  mode = "none";

  async session() {
    return null;
  }

  async token() {
    return null;
  }

  async signOut() {}
}

/** The sign-in that config.json names. */
export async function createAuth(config) {
  if (config.mode === "supabase") {
    await loadScript(SUPABASE_JS);
    const client = globalThis.supabase.createClient(config.supabase_url, config.supabase_anon_key, {
      auth: { persistSession: true, autoRefreshToken: true, detectSessionInUrl: true },
    });
    return new SupabaseAuth(client);
  }
  if (config.mode === "dev") return new DevAuth();
  return new NoAuth();
}
