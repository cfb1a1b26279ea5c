"""Profiling a catalog: run every plan of its plan space end to end on a sample (through the
local executor), measure accuracy and stage costs, fit the cost model and store the profiles
that the planner's chooser reads."""
