from django.urls import path

from models_registry.api import views

TENANT = "tenants/<slug:slug>"
MODEL = f"{TENANT}/models/<slug:name>"

urlpatterns = [
    path(f"{TENANT}/datasets/", views.DatasetListView.as_view(), name="dataset-list"),
    path(f"{TENANT}/models/", views.ModelListView.as_view(), name="model-list"),
    path(f"{MODEL}/", views.ModelDetailView.as_view(), name="model-detail"),
    path(f"{MODEL}/versions/", views.VersionListView.as_view(), name="version-list"),
    path(
        f"{MODEL}/versions/<int:number>/promote",
        views.VersionPromoteView.as_view(),
        name="version-promote",
    ),
    path(f"{MODEL}/rollback", views.ModelRollbackView.as_view(), name="model-rollback"),
    path(f"{MODEL}/training-jobs/", views.TrainingJobListView.as_view(), name="training-job-list"),
    path(
        "training-jobs/<int:job_id>/",
        views.TrainingJobDetailView.as_view(),
        name="training-job-detail",
    ),
    path(
        "training-jobs/<int:job_id>/cancel",
        views.TrainingJobCancelView.as_view(),
        name="training-job-cancel",
    ),
]
