"""Generated demo items: plausible ML project blurbs in the four default categories.

Written by the project itself (no external data), deterministic for a given seed.
"""
import random

TOPICS = {
    "natural-language-processing": (
        ["Sentiment analysis", "Named entity recognition", "Machine translation", "Question answering",
         "Text summarization", "Topic modeling", "Spam detection", "Chatbot", "Language model"],
        ["with BERT", "using transformers", "on tweets", "for legal documents", "in 12 languages",
         "with spaCy", "on customer reviews", "with GPT-2"],
        ["Fine-tunes a pretrained transformer on labelled sentences.",
         "Tokenizes text, builds embeddings and trains a sequence classifier.",
         "Compares recurrent networks with attention on a text corpus.",
         "Extracts entities and relations from raw text."],
    ),
    "computer-vision": (
        ["Object detection", "Image segmentation", "Face recognition", "Pose estimation",
         "Image captioning", "Super-resolution", "Style transfer", "OCR"],
        ["with YOLO", "using U-Net", "on satellite images", "for medical scans", "in real time",
         "with PyTorch", "on drone footage", "with OpenCV"],
        ["Trains a convolutional network on labelled images.",
         "Detects and tracks objects frame by frame in video.",
         "Segments each pixel of an image into classes.",
         "Augments images and fine-tunes a ResNet backbone."],
    ),
    "mlops": (
        ["Model serving", "Feature store", "Experiment tracking", "Model monitoring",
         "CI/CD for ML", "Data versioning", "Pipeline orchestration", "Drift detection"],
        ["with Kubernetes", "using MLflow", "on AWS", "with Airflow", "with DVC",
         "for production models", "with Prometheus", "in Docker"],
        ["Deploys trained models behind a REST endpoint and monitors latency.",
         "Tracks experiments, parameters and artifacts across runs.",
         "Automates retraining and deployment with a pipeline.",
         "Detects data drift in production and alerts the team."],
    ),
    "other": (
        ["Reinforcement learning agent", "Time series forecasting", "Recommender system",
         "Graph neural network", "Tabular AutoML", "Anomaly detection", "Bayesian optimization"],
        ["for stock prices", "for games", "on sensor data", "with XGBoost", "for e-commerce",
         "with JAX", "for energy demand"],
        ["Learns a policy by trial and error in a simulated environment.",
         "Forecasts the next values of a series from its history.",
         "Ranks products for each user from past interactions.",
         "Finds unusual records in streaming data."],
    ),
}


def demo_items(count: int = 300, seed: int = 7) -> list[dict]:
    """`count` items as dicts with id, title, description and the category they were written for."""
    rng = random.Random(seed)
    categories = list(TOPICS)
    rows, seen = [], set()
    while len(rows) < count:
        category = categories[len(rows) % len(categories)]
        heads, tails, sentences = TOPICS[category]
        title = f"{rng.choice(heads)} {rng.choice(tails)}"
        description = " ".join(rng.sample(sentences, 2))
        if (title, description) in seen:
            title = f"{title} ({len(rows) + 1})"
        seen.add((title, description))
        rows.append({"id": f"demo-{len(rows) + 1}", "title": title, "description": description, "tag": category})
    return rows
