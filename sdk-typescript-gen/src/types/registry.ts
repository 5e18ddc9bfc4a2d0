// The generated messages, enums and service descriptor of agentplane.registry.v1.
export * from "../gen/agentplane/registry/v1/agent_pb.js";
export * from "../gen/agentplane/registry/v1/registry_service_pb.js";
