/**
 * Sign-in state. The credential lives in sessionStorage only (gone when the tab closes), never in
 * localStorage, a cookie or a URL, and is never logged. What the role may do comes from
 * GetServerInfo's principal.
 */

import { createContext, type ComponentChildren } from "preact";
import { useCallback, useContext, useEffect, useMemo, useState } from "preact/hooks";
import { admin } from "@agentplane/sdk";

import { describeError, makeClient, type AgentplaneClient, type Credential } from "./api";

const STORAGE_KEY = "agentplane.console.credential";

function loadCredential(): Credential | null {
  try {
    const stored = sessionStorage.getItem(STORAGE_KEY);
    if (!stored) return null;
    const parsed = JSON.parse(stored) as Partial<Credential>;
    return typeof parsed.token === "string" && parsed.token
      ? { token: parsed.token, project: parsed.project ?? "" }
      : null;
  } catch {
    return null;
  }
}

function storeCredential(credential: Credential | null): void {
  if (credential) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credential));
  else sessionStorage.removeItem(STORAGE_KEY);
}

/** What the signed-in role may do in the console (the server enforces the same on every call). */
export interface Capabilities {
  role: admin.Role;
  roleName: string;
  /** Resolve approvals, enable and disable policies. */
  canReview: boolean;
  /** Act on another project (x-agentplane-project). */
  canChooseProject: boolean;
  summary: string;
}

export function capabilitiesOf(principal: admin.Principal | undefined): Capabilities {
  const role = principal?.role ?? admin.Role.UNSPECIFIED;
  switch (role) {
    case admin.Role.ADMIN:
      return {
        role,
        roleName: "admin",
        canReview: true,
        canChooseProject: true,
        summary: "Everything, in every project: choose the project above.",
      };
    case admin.Role.PROJECT_ADMIN:
      return {
        role,
        roleName: "project admin",
        canReview: true,
        canChooseProject: false,
        summary: "Read everything in this project, resolve approvals, manage policies.",
      };
    case admin.Role.AGENT:
      return {
        role,
        roleName: `agent ${principal?.agentId ?? ""}`.trim(),
        canReview: false,
        canChooseProject: false,
        summary: "An agent's key: what that agent may read.",
      };
    case admin.Role.READER:
      return {
        role,
        roleName: "reader",
        canReview: false,
        canChooseProject: false,
        summary: "Read only: no approvals, no policy changes.",
      };
    default:
      return { role, roleName: "unknown", canReview: false, canChooseProject: false, summary: "" };
  }
}

export interface SignedIn {
  client: AgentplaneClient;
  info: admin.GetServerInfoResponse;
  capabilities: Capabilities;
  credential: Credential;
  /** Switch the project an admin acts on. */
  chooseProject: (projectId: string) => Promise<void>;
  signOut: () => void;
}

interface AuthState {
  signedIn: SignedIn | null;
  /** Why the last sign-in failed, or why the tab was signed out. */
  message: string;
  checking: boolean;
  signIn: (credential: Credential) => Promise<boolean>;
}

const AuthContext = createContext<AuthState | null>(null);

export function useAuth(): AuthState {
  const state = useContext(AuthContext);
  if (!state) throw new Error("useAuth outside AuthProvider");
  return state;
}

/** The signed-in session; views are only rendered once there is one. */
export function useSignedIn(): SignedIn {
  const { signedIn } = useAuth();
  if (!signedIn) throw new Error("useSignedIn before sign-in");
  return signedIn;
}

export function useClient(): AgentplaneClient {
  return useSignedIn().client;
}

export function AuthProvider({ children }: { children: ComponentChildren }) {
  const [signedIn, setSignedIn] = useState<SignedIn | null>(null);
  const [message, setMessage] = useState("");
  const [checking, setChecking] = useState(true);

  const signOut = useCallback((why = "") => {
    storeCredential(null);
    setSignedIn(null);
    setMessage(why);
  }, []);

  const signIn = useCallback(
    async (credential: Credential): Promise<boolean> => {
      const client = makeClient(credential, {
        onUnauthenticated: () =>
          signOut("The server no longer accepts this credential (expired or revoked). Sign in again."),
      });
      try {
        const info = await client.serverInfo({ retry: false });
        storeCredential(credential);
        setMessage("");
        const session: SignedIn = {
          client,
          info,
          credential,
          capabilities: capabilitiesOf(info.principal),
          chooseProject: async (projectId) => {
            await signIn({ ...credential, project: projectId });
          },
          signOut: () => signOut(),
        };
        setSignedIn(session);
        return true;
      } catch (error) {
        setMessage(describeError(error));
        storeCredential(null);
        setSignedIn(null);
        return false;
      }
    },
    [signOut],
  );

  useEffect(() => {
    const stored = loadCredential();
    if (!stored) {
      setChecking(false);
      return;
    }
    void signIn(stored).finally(() => setChecking(false));
  }, [signIn]);

  const value = useMemo(
    () => ({ signedIn, message, checking, signIn }),
    [signedIn, message, checking, signIn],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}
