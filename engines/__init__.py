"""Inference engines: run an exported stream-fer model on ONNX Runtime, TensorRT or PyTorch behind one
interface; build TensorRT engines; the shipped default model (engines/default/)."""
