"""The pure core: documents -> validation -> desired state -> diff -> plan -> render.

Plain data in, plain data out: no database, no git, no click, no files (the schemas are
package data).
"""
