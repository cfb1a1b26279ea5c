"""Inference backends behind one interface; the planner asks their capabilities."""
