"""The Knative stand-ins: what a cluster does around the functions, played on one machine."""
