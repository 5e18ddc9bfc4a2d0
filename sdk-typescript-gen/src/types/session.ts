// The generated messages, enums and service descriptor of agentplane.session.v1.
export * from "../gen/agentplane/session/v1/session_pb.js";
export * from "../gen/agentplane/session/v1/session_service_pb.js";
