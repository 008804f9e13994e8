"""Deployment: the network-namespace testbed, compose/Prometheus/Grafana generation, Kubernetes."""
