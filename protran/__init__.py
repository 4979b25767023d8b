"""protran: measure and predict the hardware cost of FlexiBERT 2.0 architectures."""
