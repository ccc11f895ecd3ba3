"""From a trained generator to what the node loads: ONNX with parity check, the model card
(held-out metrics, licences), TensorRT engines, residual-scaled variants."""
