/** The shell: sign-in gate, header (identity, role, project), navigation and the routes. */

import { ErrorBoundary, LocationProvider, Route, Router, useLocation } from "preact-iso";
import { useEffect, useState } from "preact/hooks";
import type { admin } from "@agentplane/sdk";

import { AuthProvider, useAuth, useSignedIn } from "./auth";
import { SignIn } from "./views/signin";
import { SessionList, SessionDetail } from "./views/sessions";
import { TraceList, TraceDetail } from "./views/traces";
import { FeedbackView } from "./views/feedback";
import { AgentList, AgentDetail } from "./views/agents";
import { ApprovalDetail, Approvals, Decisions, Policies } from "./views/governance";
import { Models } from "./views/models";

const NAV: [string, string][] = [
  ["/sessions", "Sessions"],
  ["/traces", "Traces"],
  ["/feedback", "Feedback"],
  ["/agents", "Agents"],
  ["/governance/approvals", "Approvals"],
  ["/governance/decisions", "Decisions"],
  ["/governance/policies", "Policies"],
  ["/models", "Models"],
];

function ProjectChooser() {
  const { client, credential, info, chooseProject } = useSignedIn();
  const [projects, setProjects] = useState<admin.Project[]>([]);
  useEffect(() => {
    client.admin
      .listProjects({})
      .toArray(500)
      .then(setProjects, () => setProjects([]));
  }, [client]);
  const current = credential.project || info.principal?.projectId || "";
  return (
    <label class="project">
      Project{" "}
      <select
        data-testid="project"
        value={current}
        onChange={(event) => void chooseProject((event.target as HTMLSelectElement).value)}
      >
        {!projects.some((p) => p.projectId === current) && <option value={current}>{current}</option>}
        {projects.map((p) => (
          <option value={p.projectId} key={p.projectId}>
            {p.projectId}
            {p.displayName ? ` — ${p.displayName}` : ""}
          </option>
        ))}
      </select>
    </label>
  );
}

function Header() {
  const { info, capabilities, signOut } = useSignedIn();
  const principal = info.principal;
  return (
    <header class="top">
      <a class="brand" href="/sessions">
        Agentplane
      </a>
      <div class="whoami" data-testid="whoami">
        <span class="badge role" data-testid="role">
          {capabilities.roleName}
        </span>
        <span class="muted">{principal?.subject || principal?.keyId}</span>
        {capabilities.canChooseProject ? (
          <ProjectChooser />
        ) : (
          <span class="muted">project {principal?.projectId}</span>
        )}
        <span class="muted can" data-testid="can">
          {capabilities.summary}
        </span>
        <button type="button" class="link" onClick={signOut}>
          Sign out
        </button>
      </div>
    </header>
  );
}

function Nav() {
  const { path } = useLocation();
  return (
    <nav class="side">
      {NAV.map(([href, label]) => (
        <a key={href} href={href} class={path === href || path.startsWith(`${href}/`) ? "active" : ""}>
          {label}
        </a>
      ))}
    </nav>
  );
}

function NotFound() {
  return (
    <div class="card">
      <h2>Not found</h2>
      <p>
        No page here. <a href="/sessions">Sessions</a>
      </p>
    </div>
  );
}

function Home() {
  const { route } = useLocation();
  useEffect(() => route("/sessions", true), [route]);
  return null;
}

function Console() {
  const { signedIn, checking } = useAuth();
  if (checking) return <p class="muted center">Checking your sign-in…</p>;
  if (!signedIn) return <SignIn />;
  // Keyed by project: an admin switching projects gets fresh views.
  return (
    <div class="layout" key={signedIn.credential.project}>
      <Header />
      <Nav />
      <main>
        <ErrorBoundary>
          <Router>
            <Route path="/" component={Home} />
            <Route path="/sessions" component={SessionList} />
            <Route path="/sessions/:sessionId" component={SessionDetail} />
            <Route path="/traces" component={TraceList} />
            <Route path="/traces/:traceId" component={TraceDetail} />
            <Route path="/feedback" component={FeedbackView} />
            <Route path="/agents" component={AgentList} />
            <Route path="/agents/:agentId" component={AgentDetail} />
            <Route path="/governance" component={Approvals} />
            <Route path="/governance/approvals" component={Approvals} />
            <Route path="/governance/approvals/:approvalId" component={ApprovalDetail} />
            <Route path="/governance/decisions" component={Decisions} />
            <Route path="/governance/policies" component={Policies} />
            <Route path="/models" component={Models} />
            <Route default component={NotFound} />
          </Router>
        </ErrorBoundary>
      </main>
    </div>
  );
}

export function App() {
  return (
    <LocationProvider>
      <AuthProvider>
        <Console />
      </AuthProvider>
    </LocationProvider>
  );
}
