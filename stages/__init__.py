"""The four pipeline stages (decoder, preprocessor, inference, encoder) and the colour math they share."""
