"""mlplug: ML models written once against abstract Backend/Context/Tensor, run on any plugin."""
