"""The deployment generators: the Knative manifests and docker-compose's secrets."""
