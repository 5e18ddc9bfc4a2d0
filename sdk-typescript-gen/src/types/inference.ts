// The generated messages, enums and service descriptor of agentplane.inference.v1.
export * from "../gen/agentplane/inference/v1/inference_service_pb.js";
export * from "../gen/agentplane/inference/v1/model_pb.js";
