"""Repairs after the render: the identity guard (windows where the face slipped rendered again) and the drift lock
(every window's colours matched to the first's). docs/hjb.md, "Identity guard and drift lock"."""
