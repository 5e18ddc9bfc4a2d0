// The generated messages, enums and service descriptor of agentplane.governance.v1.
export * from "../gen/agentplane/governance/v1/approval_pb.js";
export * from "../gen/agentplane/governance/v1/decision_pb.js";
export * from "../gen/agentplane/governance/v1/governance_service_pb.js";
export * from "../gen/agentplane/governance/v1/governance_settings_pb.js";
export * from "../gen/agentplane/governance/v1/policy_pb.js";
export * from "../gen/agentplane/governance/v1/trust_pb.js";
