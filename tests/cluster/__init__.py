"""Tests of socketdock.cluster and the cluster setting."""
