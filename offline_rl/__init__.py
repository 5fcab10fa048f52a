"""Offline RL: conservative agents (d3rlpy), behaviour-policy and response models."""
