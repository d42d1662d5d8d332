from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:slug>/", views.dashboard, name="dashboard"),
    path("p/<slug:slug>/annotate/", views.annotate, name="annotate"),
    path("p/<slug:slug>/annotate/next/", views.annotate_next, name="annotate_next"),
    path("p/<slug:slug>/annotate/submit/", views.annotate_submit, name="annotate_submit"),
    path("p/<slug:slug>/annotate/skip/", views.annotate_skip, name="annotate_skip"),
    path("p/<slug:slug>/annotate/undo/", views.annotate_undo, name="annotate_undo"),
    path("p/<slug:slug>/guidelines/", views.guidelines, name="guidelines"),
    path("p/<slug:slug>/import/", views.import_page, name="import"),
    path("p/<slug:slug>/settings/", views.settings_page, name="settings"),
]

api_urlpatterns = [
    path("projects/", api.ProjectList.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", api.ProjectDetail.as_view(), name="api-project"),
    path("projects/<slug:slug>/import/", api.import_file, name="api-import"),
    path("projects/<slug:slug>/claim/", api.claim, name="api-claim"),
    path("projects/<slug:slug>/annotations/", api.submit, name="api-submit"),
    path("projects/<slug:slug>/skip/", api.skip, name="api-skip"),
    path("projects/<slug:slug>/undo/", api.undo, name="api-undo"),
]
