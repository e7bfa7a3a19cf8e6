"""The network and inference: SuperPoint (v1, v6) in network, weights loading in loading,
post-processing in keypoints, the Extractor, its device function (inference), the ONNX Runtime and
OpenVINO backends, descriptor matching and the ONNX graph (onnx_graph)."""
