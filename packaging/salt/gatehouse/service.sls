# gatehouse.service (manage_service): the unit enabled and running; a
# changed config or secret reloads it (ExecReload: SIGHUP), and a config
# whose `gatehouse check --against` names settings a reload cannot apply
# (listeners, state_dir, log, state) restarts it as well. Unchanged files
# touch nothing. It never writes the config.
{%- from 'gatehouse/map.jinja' import gatehouse, gatehouse_dir with context %}
{%- if gatehouse.manage_service %}
{%-   set previous = gatehouse_dir ~ '/.gatehouse-previous.yaml' %}
include:
  - gatehouse.config

gatehouse-service:
  service.running:
    - name: {{ gatehouse.service }}
    - enable: True
    - reload: True
    - watch:
      - file: gatehouse-config
{%-   for name in gatehouse.secrets | sort %}
      - file: gatehouse-secret-{{ name }}
{%-   endfor %}

# The config in force, copied just before a change replaces it (prereq),
# for `gatehouse check --against` below.
gatehouse-config-previous:
  file.copy:
    - name: {{ previous | json }}
    - source: {{ gatehouse.config_path | json }}
    - force: True
    - mode: '0600'
    - onlyif: test -f {{ gatehouse.config_path }}
    - prereq:
      - file: gatehouse-config

gatehouse-restart:
  cmd.run:
    - name: systemctl restart {{ gatehouse.service }}
    - onlyif: test -f {{ previous }} && {{ gatehouse.bin }} check --config {{ gatehouse.config_path }} --against {{ previous }} | grep -q '^restart needed:'
    - onchanges:
      - file: gatehouse-config
    - require:
      - service: gatehouse-service
{%- endif %}
