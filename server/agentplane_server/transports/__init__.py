"""Transports: how calls reach the one per-call pipeline. They translate and nothing else.

- native gRPC: grpc.aio (app.py builds it; interceptors/ holds the pipeline it runs);
- HTTP (http.py): the Connect protocol, JSON and binary, and gRPC-Web, on uvicorn.
"""
