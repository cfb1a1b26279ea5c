"""Planning: the physical plan of each stage (model, source, decode, engine, batch, threads),
the cost model that predicts it, accuracy/throughput targets, profiles and calibration."""
