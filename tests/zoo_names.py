"""The zoo's model names, importable without torch (tests/zoo.py builds them)."""

ZOO_NAMES = [
    "lstm_mlp_head", "gru_mlp_head_softmax", "lstm2_mlp_head_sigmoid", "lstm_proj_mlp_head",
    "gru_mlp_head_log_softmax", "lstm_relu_before_head", "linear_input", "linear_tanh_input_gru",
    "batchnorm_input", "layernorm_input_gelu", "lstm_layernorm_after", "gru_layernorm_softmax", "two_heads",
    "attention_pool", "attention_pool_mlp_gru", "causal_conv", "causal_conv_dilated_gru",
    "lstmcell_stack_gelu_head",
]
