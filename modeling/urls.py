from django.urls import path

from . import api, views

urlpatterns = [
    path("p/<slug:slug>/model/", views.model_page, name="model"),
    path("p/<slug:slug>/model/progress/", views.model_progress, name="model_progress"),
    path("p/<slug:slug>/model/charts/<slug:theme>/<slug:chart>.svg", views.model_chart, name="model_chart"),
    path("p/<slug:slug>/model/train/", views.train_now, name="model_train"),
    path("p/<slug:slug>/model/rules/", views.add_rule, name="model_rule_add"),
    path("p/<slug:slug>/model/rules/<int:rule_id>/delete/", views.delete_rule, name="model_rule_delete"),
    path("p/<slug:slug>/model/slices/", views.add_slice, name="model_slice_add"),
    path("p/<slug:slug>/model/slices/<int:slice_id>/delete/", views.delete_slice, name="model_slice_delete"),
]

api_urlpatterns = [
    path("projects/<slug:slug>/predict/", api.predict, name="api-predict"),
    path("projects/<slug:slug>/models/", api.model_versions, name="api-models"),
]
