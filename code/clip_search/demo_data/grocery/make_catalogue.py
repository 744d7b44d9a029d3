"""Rebuild this demo catalogue from the Grocery Store Dataset (run from the repo root):

    python demo_data/grocery/make_catalogue.py ../shared/datasets/grocery-store

Copies the 81 catalogue ("iconic") photos and writes products.jsonl (id, title, image, category,
department, description) and text-queries.jsonl (each product's description as a query for it).
"""
import csv
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def title_of(fine: str, coarse: str) -> str:
    words = fine.replace("-", " ")
    coarse_words = coarse.replace("-", " ")
    return words if coarse_words.lower() in words.lower() else f"{words} {coarse_words}"


def main(source: Path) -> None:
    shutil.rmtree(HERE / "images", ignore_errors=True)
    products, queries = [], []
    with open(source / "classes.csv", encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle):
            if row[1].strip().startswith("Class ID") or not row[1].strip().isdigit():
                continue
            fine, class_id, coarse, _, image_path, description_path = [c.strip() for c in row]
            image = source / image_path.lstrip("/")
            department = image_path.lstrip("/").split("/")[1]
            target = HERE / "images" / f"{fine}.jpg"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(image, target)
            description = (source / description_path.lstrip("/")).read_text(encoding="utf-8").strip()
            products.append({"id": fine, "title": title_of(fine, coarse), "image": f"images/{fine}.jpg",
                             "category": coarse, "department": department, "class_id": int(class_id),
                             "description": description})
            queries.append({"text": description, "relevant": [fine]})
    with open(HERE / "products.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in products)
    with open(HERE / "text-queries.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in queries)
    shutil.copyfile(source / "LICENSE", HERE / "LICENSE")
    print(f"{len(products)} products written to {HERE}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
