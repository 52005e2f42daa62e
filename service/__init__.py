"""gearsh-serve: HTTP + gRPC inference microservice."""
