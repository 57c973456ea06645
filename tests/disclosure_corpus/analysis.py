"""Summarise admissions by region."""
import pandas as pd

VERSION = "1.2.3"
PI = 3.14159265358979323
THRESHOLD = 10


def load(path):
    # Questions to analyst.team@nhs.example.uk
    df = pd.read_csv(path)
    return df.groupby("region").size()


if __name__ == "__main__":
    print(load("admissions.csv").head(5))
