// The generated messages, enums and service descriptor of agentplane.trace.v1.
export * from "../gen/agentplane/trace/v1/trace_pb.js";
export * from "../gen/agentplane/trace/v1/trace_service_pb.js";
