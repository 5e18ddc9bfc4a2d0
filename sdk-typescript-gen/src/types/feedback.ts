// The generated messages, enums and service descriptor of agentplane.feedback.v1.
export * from "../gen/agentplane/feedback/v1/feedback_pb.js";
export * from "../gen/agentplane/feedback/v1/feedback_service_pb.js";
