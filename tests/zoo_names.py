"""The zoo's model names, importable without torch (tests/zoo.py builds them)."""

ZOO_NAMES = [
    "lstm_mlp_head", "gru_mlp_head_softmax", "lstm2_mlp_head_sigmoid", "lstm_proj_mlp_head",
    "gru_mlp_head_log_softmax", "lstm_relu_before_head", "linear_input", "linear_tanh_input_gru", "batchnorm_input",
    "layernorm_input_gelu", "lstm_layernorm_after", "gru_layernorm_softmax", "two_heads", "attention_pool",
    "attention_pool_mlp_gru", "causal_conv", "causal_conv_dilated_gru", "lstmcell_stack_gelu_head",
    "grucell_stack_tanh_head", "three_heads_gru", "conv_bn_silu_lstm_proj_layernorm", "deep_lstm_nobias_elu_gelu",
    "deep_gru_nobias_elu_gelu", "gru_layernorm_after", "lstm_mlp_head_tanh_softmax", "gru2_proj_free_silu_head",
    "lstm_batchnorm_relu_input", "gru_layernorm_input", "causal_conv_gru_k3", "attention_pool_mlp_lstm",
]
