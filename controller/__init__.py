"""The runtime and the face of ristwin: messages, transports, daemons, deployment, CLI."""
