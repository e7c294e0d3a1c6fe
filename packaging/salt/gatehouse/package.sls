# gatehouse.package: installs the .deb named by pillar `gatehouse:package`
# (manage_package); never configures anything.
{%- from 'gatehouse/map.jinja' import gatehouse with context %}
{%- if gatehouse.manage_package %}
gatehouse-package:
  pkg.installed:
    - sources:
      - gatehouse: {{ gatehouse.package | json }}
{%- endif %}
