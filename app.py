"""Placeholder until the Gradio demo lands: says so and serves nothing else."""

import gradio as gr

with gr.Blocks(title="kf") as demo:
    gr.Markdown("# kf\nThe Knowledge Factorization demo is being built; the bundled factor banks come next.")

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", server_port=7860)
