/**
 * A small agent on the Agentplane TypeScript SDK. It
 *   1. registers in the registry (and keeps its lease with heartbeats),
 *   2. runs a governed action (a permission check first, an execution report after),
 *   3. records the conversation in a session,
 *   4. sends feedback on its answer,
 * then deregisters. Settings come from the environment: AGENTPLANE_URL, AGENTPLANE_API_KEY (an
 * agent key for AGENTPLANE_AGENT_ID, or a project key), AGENTPLANE_AGENT_ID (default
 * "example-agent"). Each step prints one JSON line; the last one is {"step": "done", ...}.
 */

import {
  Agent,
  createAgentplaneClient,
  currentCall,
  feedback,
  RpcError,
  session,
  SDK_VERSION,
} from "@agentplane/sdk";

function log(step: string, fields: Record<string, unknown> = {}): void {
  console.log(
    JSON.stringify({ step, ...fields }, (_, v: unknown) =>
      typeof v === "bigint" ? v.toString() : v,
    ),
  );
}

async function main(): Promise<void> {
  const agentId = process.env.AGENTPLANE_AGENT_ID || "example-agent";
  const client = createAgentplaneClient(); // AGENTPLANE_URL, AGENTPLANE_API_KEY
  const agent = new Agent(client, {
    agentId,
    card: {
      name: "Order helper",
      version: "1.0.0",
      description: "Answers questions about orders",
      skills: [{ id: "order-status", name: "Order status", tags: ["orders"] }],
      framework: "custom",
    },
  });
  let step = "register";
  try {
    const registered = await agent.start();
    log("registered", { agentId, status: registered.status, sdkVersion: SDK_VERSION });

    // A tool call under governance: CheckPermission before (cached for the server's cache_ttl,
    // failing closed if Agentplane is unreachable), ReportExecution after.
    step = "governed action";
    const lookupOrder = agent.governed(
      { action: "tool:orders.lookup", resource: (orderId: string) => `orders://${orderId}` },
      async (orderId: string) => {
        currentCall()!.usage = { inputTokens: 7n, outputTokens: 3n };
        return { orderId, status: "shipped" };
      },
    );
    const order = await lookupOrder("7");
    log("governed", { action: "tool:orders.lookup", order });

    step = "session";
    const { session: conversation } = await client.sessions.createSession({
      title: "Where is my order?",
      agentId,
      userId: "user-1",
    });
    const { messages } = await client.sessions.appendMessages({
      sessionId: conversation!.sessionId,
      messages: [
        { role: session.Role.USER, content: "Where is order 7?" },
        {
          role: session.Role.ASSISTANT,
          content: `Order ${order.orderId} has ${order.status}.`,
          agentId,
          model: "example-model",
          usage: { inputTokens: 7n, outputTokens: 3n },
        },
      ],
    });
    const answer = messages[1]!;
    log("appended", {
      sessionId: conversation!.sessionId,
      sequences: messages.map((m) => m.sequence),
    });

    step = "feedback";
    // A person's verdict arrives with a feedback token that the agent mints for its answer and
    // hands to the user's browser, which submits it without an API key (as done here).
    const { token } = await client.feedback.createFeedbackToken({
      userId: "user-1",
      agentId,
      sessionId: conversation!.sessionId,
      messageId: answer.messageId,
    });
    const { feedback: sent } = await client.feedback.submitFeedback({
      token,
      rating: feedback.Rating.THUMBS_UP,
      comment: "quick and right",
    });
    log("feedback", { feedbackId: sent!.feedbackId });

    step = "deregister";
    await agent.stop();
    log("done", {
      agentId,
      sessionId: conversation!.sessionId,
      messageId: answer.messageId,
      feedbackId: sent!.feedbackId,
      reportsSent: agent.governor.reportsSent,
    });
  } catch (error) {
    log("failed", {
      at: step,
      error: error instanceof Error ? error.message : String(error),
      code: error instanceof RpcError ? error.codeName : undefined,
    });
    if (agent.isRunning) await agent.stop().catch(() => undefined);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

await main();
