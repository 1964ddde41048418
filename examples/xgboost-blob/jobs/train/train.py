"""Train an XGBoost model on Ray from parquet files under --data."""
import argparse

import ray
from xgboost_ray import RayDMatrix, RayParams, train

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

ray.init()
dtrain = RayDMatrix(f"{args.data}/train.parquet", label="label")
booster = train({"objective": "binary:logistic"}, dtrain, num_boost_round=50,
                ray_params=RayParams(num_actors=4, cpus_per_actor=14))
booster.save_model(f"{args.out}/model.json")
